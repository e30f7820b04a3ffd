//! [`Manifest`]: the small JSON record whose creation commits an artifact.
//!
//! An artifact's data and index objects are written first, under unique keys; the manifest
//! is written last, create-only. Until it exists the artifact does not exist for any
//! listing, restore or parent choice. The manifest names every object of the artifact with
//! its size and SHA-256, so that a reader can verify everything it fetches.
//!
//! Manifests carry a `format_version`. A reader refuses a manifest of a newer version than it
//! knows ([`MANIFEST_FORMAT_VERSION`]) with [`Error::UnsupportedManifestVersion`] rather than
//! guess at fields it does not understand; unknown fields within a known version are refused
//! too.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::decide::BackupDecision;
use crate::id::truncate_for_message;
use crate::{ArtifactId, DatabaseName, Error, Position, PositionRange, Sha256Digest};

/// The manifest format version this crate writes and the newest it reads. Version 2
/// (`docs/FORMAT.md`, "Format 2") records no SHA-256 of the data object, which a store
/// may have assembled by server-side copy: each record is verified by its own digest and
/// the index pins the object's exact record list. Version 1 manifests, with that
/// SHA-256, stay readable.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;

/// The format version of a manifest in an encrypted repository: format 2 with a `mac`
/// (`docs/FORMAT.md`, "Encryption"). A plain repository's manifests stay format 2.
pub const ENCRYPTED_MANIFEST_FORMAT_VERSION: u32 = 3;

/// The oldest manifest format version this crate reads.
pub const OLDEST_MANIFEST_FORMAT_VERSION: u32 = 1;

/// The largest manifest accepted, in bytes. Real manifests are a few KiB.
pub const MAX_MANIFEST_LEN: usize = 4 << 20;

/// FULL or DIFF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ArtifactKind {
    /// Holds the complete state; the root of a chain.
    Full,
    /// Holds only what changed since its parent.
    Diff,
}

impl fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArtifactKind::Full => "FULL",
            ArtifactKind::Diff => "DIFF",
        })
    }
}

/// How each block of an artifact is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case", deny_unknown_fields)]
pub enum Compression {
    /// Blocks are stored as they are.
    None,
    /// Each block is one zstd frame.
    Zstd {
        /// The level it was written with (informational; any level decodes).
        level: i32,
    },
}

/// What an object of an artifact holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectRole {
    /// Compressed blocks.
    Data,
    /// The index: the change set and where each stored block lives.
    Index,
}

impl ObjectRole {
    /// The suffix of this role's object key.
    pub fn suffix(self) -> &'static str {
        match self {
            ObjectRole::Data => ".data",
            ObjectRole::Index => ".index",
        }
    }

    /// The key of artifact `id`'s object of this role, relative to the repository prefix:
    /// `<database>/<id>.data` or `<database>/<id>.index`. The only keys a manifest may name
    /// (the storage layout is built on this function).
    pub fn key_for(self, id: &ArtifactId) -> String {
        format!("{}/{id}{}", id.database(), self.suffix())
    }
}

/// One object of an artifact, as committed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// What the object holds.
    pub role: ObjectRole,
    /// Its key, relative to the repository's prefix.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes: for every object in format 1; for the index only in
    /// format 2, whose data object is verified record by record against its index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
}

/// Sizes recorded for reports and listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sizes {
    /// Bytes of file content in the state this artifact restores to.
    pub logical_bytes: u64,
    /// Bytes of uncompressed block data this artifact stores.
    pub block_bytes: u64,
    /// Bytes of all objects of this artifact (what it costs in the bucket).
    pub stored_bytes: u64,
    /// Entries in the resulting state.
    pub entries: u64,
    /// Blocks this artifact stores.
    pub blocks: u64,
}

/// The commit record of one artifact. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`] at the time of writing.
    pub format_version: u32,
    /// The artifact's id.
    pub id: ArtifactId,
    /// The database; equal to the id's.
    pub database: DatabaseName,
    /// FULL or DIFF.
    pub kind: ArtifactKind,
    /// The parent a DIFF applies to; `None` for a FULL.
    pub parent: Option<ArtifactId>,
    /// The positions `(from, to]` covered.
    pub positions: PositionRange,
    /// Nothing changed since the parent (an EMPTY DIFF: history, never a parent).
    pub empty: bool,
    /// When the backup started (UTC); equal to the id's time.
    pub created_at: Timestamp,
    /// When the manifest was written (UTC); restore "until a time" compares against this.
    pub committed_at: Timestamp,
    /// How blocks are compressed.
    pub compression: Compression,
    /// The block size the artifact was written with, in bytes.
    pub block_size: u32,
    /// Sizes, for reports.
    pub sizes: Sizes,
    /// Every object of the artifact.
    pub objects: Vec<ObjectRef>,
    /// Digest of the state the artifact's chain restores to ([`crate::State::digest`]).
    pub state_digest: Sha256Digest,
    /// Why this is a FULL or a DIFF, and against which parent.
    pub decision: BackupDecision,
    /// What the source said about itself (free-form, for people).
    #[serde(default)]
    pub source: BTreeMap<String, String>,
    /// For a FULL written by `aggregate` with `keepOldBackup: false`: the chain it replaces,
    /// FULL first, which is deleted once this manifest is committed. Recorded here, in the
    /// commit itself, so that deletions cut short by a crash are finished by the next
    /// aggregate or expire ([`crate::plan_superseded`]). Absent from every other manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<ArtifactId>,
    /// In an encrypted repository (format 3): the HMAC-SHA256, under the repository's
    /// manifest key, of the canonical encoding of every other field
    /// ([`crate::RepoKey::sign_manifest`]). Absent from format 1 and 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Sha256Digest>,
}

#[derive(Deserialize)]
struct VersionProbe {
    format_version: Option<serde_json::Value>,
}

impl Manifest {
    /// Decodes and validates a manifest. Any input gives a value or an error, never a panic.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(Error::ManifestSyntax {
                why: format!(
                    "it is {} bytes, more than the {MAX_MANIFEST_LEN} a manifest may have",
                    bytes.len()
                ),
            });
        }
        let probe: VersionProbe = serde_json::from_slice(bytes)
            .map_err(|e| Error::ManifestSyntax { why: e.to_string() })?;
        let version = match probe.format_version {
            None => {
                return Err(Error::ManifestSyntax {
                    why: "it has no format_version".into(),
                });
            }
            Some(v) => v.as_u64().ok_or_else(|| Error::ManifestSyntax {
                why: "format_version is not a whole number".into(),
            })?,
        };
        if version == 0 {
            return Err(Error::ManifestSyntax {
                why: "format_version 0 does not exist".into(),
            });
        }
        if version > u64::from(ENCRYPTED_MANIFEST_FORMAT_VERSION) {
            return Err(Error::UnsupportedManifestVersion {
                found: version,
                supported: ENCRYPTED_MANIFEST_FORMAT_VERSION,
            });
        }
        let manifest: Manifest =
            crate::sealed::open(bytes).map_err(|e| Error::ManifestSyntax { why: e.to_string() })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Encodes the manifest as sealed, pretty JSON (the bytes that are committed): the
    /// fields, then `"sha256"` of their canonical encoding (see [`crate::sealed`]).
    pub fn to_json(&self) -> Vec<u8> {
        crate::sealed::seal(self)
    }

    /// Checks the manifest on its own (its links to other artifacts are
    /// [`Catalog`](crate::Catalog)'s business): the id matches the database and creation
    /// time, positions are ordered, a FULL starts at position 0, only a DIFF is empty, the
    /// block size is not zero, object keys are safe relative keys and sizes add up.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |why: String| Error::InvalidManifest {
            artifact: self.id.clone(),
            why,
        };
        if self.format_version < OLDEST_MANIFEST_FORMAT_VERSION
            || self.format_version > ENCRYPTED_MANIFEST_FORMAT_VERSION
        {
            return Err(invalid(format!(
                "format_version {} is not one this version reads",
                self.format_version
            )));
        }
        if (self.format_version == ENCRYPTED_MANIFEST_FORMAT_VERSION) != self.mac.is_some() {
            return Err(invalid(format!(
                "format_version {} {} a mac; only format 3 (an encrypted repository's) has one",
                self.format_version,
                if self.mac.is_some() { "has" } else { "lacks" }
            )));
        }
        if self.id.database() != &self.database {
            return Err(invalid(format!(
                "its id belongs to database {} but it says database {}",
                self.id.database(),
                self.database
            )));
        }
        if self.id.created_at() != self.created_at {
            return Err(invalid(format!(
                "created_at {} differs from the time in its id",
                self.created_at
            )));
        }
        if self.committed_at < self.created_at {
            return Err(invalid("committed_at is before created_at".into()));
        }
        if !self.positions.is_valid() {
            return Err(invalid(format!(
                "positions {} run backwards",
                self.positions
            )));
        }
        if self.kind == ArtifactKind::Full && self.positions.from != Position::ZERO {
            return Err(invalid(format!(
                "a FULL covers (0, to] but this one covers {}",
                self.positions
            )));
        }
        if self.empty && self.kind != ArtifactKind::Diff {
            return Err(invalid("only a DIFF can be empty".into()));
        }
        if self.decision.kind != self.kind || self.decision.parent != self.parent {
            return Err(invalid(
                "its decision names another kind or parent than the manifest".into(),
            ));
        }
        if self.block_size == 0 {
            return Err(invalid("block_size is 0".into()));
        }
        if !self.supersedes.is_empty() {
            if self.kind != ArtifactKind::Full
                || self.decision.reason != crate::ReasonCode::FullAggregated
            {
                return Err(invalid(
                    "only a FULL written by aggregate can supersede a chain".into(),
                ));
            }
            if let Some(other) = self
                .supersedes
                .iter()
                .find(|a| a.database() != &self.database || **a >= self.id)
            {
                return Err(invalid(format!(
                    "it supersedes {other}, which is not an earlier artifact of its database"
                )));
            }
        }
        let mut total = 0u64;
        let mut roles = Vec::with_capacity(self.objects.len());
        for object in &self.objects {
            validate_key(&object.key).map_err(|why| {
                invalid(format!(
                    "object key {:?} {why}",
                    truncate_for_message(&object.key)
                ))
            })?;
            // A manifest names its own objects only: another artifact's key here would
            // let deleting this artifact delete what that one needs.
            let own = object.role.key_for(&self.id);
            if object.key != own {
                return Err(invalid(format!(
                    "it names the object {:?}, which is not its own (its {:?} object is {own:?})",
                    truncate_for_message(&object.key),
                    object.role
                )));
            }
            if roles.contains(&object.role) {
                return Err(invalid(format!("it names two {:?} objects", object.role)));
            }
            // Format 1 hashes every object; format 2 the index only (its data object
            // may be assembled by the store, and is pinned by its index instead).
            let hashed = self.format_version == 1 || object.role == ObjectRole::Index;
            if object.sha256.is_some() != hashed {
                return Err(invalid(format!(
                    "its {:?} object {} a SHA-256, which format {} {}",
                    object.role,
                    if object.sha256.is_some() {
                        "has"
                    } else {
                        "lacks"
                    },
                    self.format_version,
                    if hashed { "requires" } else { "does not have" }
                )));
            }
            roles.push(object.role);
            total = total
                .checked_add(object.size)
                .ok_or_else(|| invalid("object sizes overflow".into()))?;
        }
        if total != self.sizes.stored_bytes {
            return Err(invalid(format!(
                "its objects add up to {total} bytes but sizes.stored_bytes says {}",
                self.sizes.stored_bytes
            )));
        }
        Ok(())
    }
}

/// The longest object key accepted (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

/// An object key relative to the repository prefix: non-empty, at most 1024 bytes, no
/// leading `/`, no empty, `.` or `..` segment, no control characters.
pub(crate) fn validate_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err("must be 1 to 1024 bytes long");
    }
    if key.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if key
        .split('/')
        .any(|segment| matches!(segment, "" | "." | ".."))
    {
        return Err("has an empty, '.' or '..' segment");
    }
    Ok(())
}

/// Builds a [`Manifest`] from a [`BackupDecision`], with defaults for everything the
/// decision does not say; [`build`](Self::build) validates once.
///
/// Defaults: not empty, committed when created, zstd level 3, 1 MiB blocks, no objects,
/// zero sizes, the digest of the empty state, no source metadata.
#[derive(Clone, Debug)]
pub struct ManifestBuilder {
    manifest: Manifest,
}

/// The default block size: 1 MiB.
pub const DEFAULT_BLOCK_SIZE: u32 = 1 << 20;

impl ManifestBuilder {
    /// Starts a manifest for artifact `id`, carrying out `decision`.
    pub fn new(id: ArtifactId, decision: BackupDecision) -> Self {
        Self {
            manifest: Manifest {
                format_version: MANIFEST_FORMAT_VERSION,
                database: id.database().clone(),
                created_at: id.created_at(),
                committed_at: id.created_at(),
                kind: decision.kind,
                parent: decision.parent.clone(),
                positions: decision.positions,
                empty: false,
                compression: Compression::Zstd { level: 3 },
                block_size: DEFAULT_BLOCK_SIZE,
                sizes: Sizes::default(),
                objects: Vec::new(),
                state_digest: crate::State::new().digest(),
                source: BTreeMap::new(),
                supersedes: Vec::new(),
                mac: None,
                decision,
                id,
            },
        }
    }

    /// Marks the artifact EMPTY (nothing changed since the parent).
    pub fn empty(mut self, empty: bool) -> Self {
        self.manifest.empty = empty;
        self
    }

    /// Sets the commit time.
    pub fn committed_at(mut self, at: Timestamp) -> Self {
        self.manifest.committed_at = at;
        self
    }

    /// Sets the compression.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.manifest.compression = compression;
        self
    }

    /// Sets the block size.
    pub fn block_size(mut self, block_size: u32) -> Self {
        self.manifest.block_size = block_size;
        self
    }

    /// Sets the objects; `sizes.stored_bytes` becomes their total.
    pub fn objects(mut self, objects: Vec<ObjectRef>) -> Self {
        self.manifest.sizes.stored_bytes =
            objects.iter().map(|o| o.size).fold(0, u64::saturating_add);
        self.manifest.objects = objects;
        self
    }

    /// Sets the sizes other than `stored_bytes` (which follows the objects).
    pub fn sizes(mut self, sizes: Sizes) -> Self {
        let stored = self.manifest.sizes.stored_bytes;
        self.manifest.sizes = Sizes {
            stored_bytes: stored,
            ..sizes
        };
        self
    }

    /// Sets the block counts (`sizes.blocks`, `sizes.block_bytes`) from the records the
    /// artifact's index lists, which format 2 requires them to match.
    pub fn block_records(mut self, records: &[crate::BlockLocation]) -> Self {
        self.manifest.sizes.blocks = records.len() as u64;
        self.manifest.sizes.block_bytes = records
            .iter()
            .map(|b| u64::from(b.len))
            .fold(0, u64::saturating_add);
        self
    }

    /// Sets the digest of the state the chain restores to.
    pub fn state_digest(mut self, digest: Sha256Digest) -> Self {
        self.manifest.state_digest = digest;
        self
    }

    /// Adds a source metadata pair.
    pub fn source(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.manifest.source.insert(key.into(), value.into());
        self
    }

    /// Records the chain an aggregated FULL replaces (see [`Manifest::supersedes`]).
    pub fn supersedes(mut self, chain: Vec<ArtifactId>) -> Self {
        self.manifest.supersedes = chain;
        self
    }

    /// Validates and returns the manifest.
    pub fn build(self) -> Result<Manifest, Error> {
        self.manifest.validate()?;
        Ok(self.manifest)
    }
}
