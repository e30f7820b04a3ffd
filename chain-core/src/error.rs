//! [`Error`]: everything that can go wrong in `chain-core`, one enum for the crate.

use crate::state::ChangeConflict;
use crate::{ArtifactId, DatabaseName, SkippedParent, Unusable};

/// An error from `chain-core`. Every variant names the thing it is about and, in its
/// message, what to do next. Messages are lowercase phrases, so they read well in a chain
/// of causes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Part limits of a store that no plan can satisfy.
    #[error("invalid part limits: {why}")]
    InvalidPartLimits {
        /// What is wrong with them.
        why: String,
    },
    /// Records that cannot be assembled into one object as given.
    #[error(
        "the new FULL cannot be assembled from the chain's records: {why}; aggregate with `--copy reencode` instead"
    )]
    InvalidAssembly {
        /// What is wrong.
        why: String,
    },
    /// A database name that is not allowed.
    #[error(
        "invalid database name {name:?}: {why}; use 1-63 ASCII letters, digits, '.', '_' or '-'"
    )]
    InvalidDatabaseName {
        /// The name given (shortened).
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An artifact id that does not parse.
    #[error(
        "invalid artifact id {id:?}: {why}; ids look like neo4j-20261125T164656.123456Z-9f86d081884c7d65 (see `catena inspect`)"
    )]
    InvalidArtifactId {
        /// The id given (shortened).
        id: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A SHA-256 digest that does not parse.
    #[error("invalid sha-256 digest {digest:?}: expected 64 lowercase hex digits")]
    InvalidDigest {
        /// The digest given (shortened).
        digest: String,
    },
    /// A path inside a database that could escape it or is malformed.
    #[error(
        "invalid entry path {path:?}: {why}; artifact contents must use relative paths inside the database"
    )]
    InvalidEntryPath {
        /// The path (shortened).
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An entry whose fields disagree.
    #[error("invalid entry {path:?}: {why}")]
    InvalidEntry {
        /// The path.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A change set whose lists are malformed.
    #[error("invalid change set: {why}")]
    InvalidChangeSet {
        /// What is wrong with it.
        why: &'static str,
    },
    /// A change set that does not apply to the state its chain composes to.
    #[error(
        "change set of {artifact} does not apply to its parent's state ({conflict}); the chain is damaged: run `catena check`"
    )]
    ComposeConflict {
        /// The artifact whose change set conflicts.
        artifact: ArtifactId,
        /// The conflict.
        conflict: ChangeConflict,
    },
    /// Bytes that are not a manifest.
    #[error("manifest is not valid: {why}")]
    ManifestSyntax {
        /// What is wrong.
        why: String,
    },
    /// A manifest written by a newer Catena.
    #[error(
        "manifest format version {found} is newer than the {supported} this Catena reads; upgrade Catena to read these backups"
    )]
    UnsupportedManifestVersion {
        /// The version found.
        found: u64,
        /// The newest this build reads.
        supported: u32,
    },
    /// A manifest whose fields disagree.
    #[error("manifest of {artifact} is invalid: {why}")]
    InvalidManifest {
        /// The artifact.
        artifact: ArtifactId,
        /// What is wrong.
        why: String,
    },
    /// A `type` that is not FULL, DIFF or AUTO.
    #[error("invalid backup type {value:?}: use FULL, DIFF or AUTO")]
    InvalidBackupType {
        /// The value given.
        value: String,
    },
    /// `type = DIFF` with no earlier backup and `fallbackToFull = false`.
    #[error(
        "cannot take a DIFF of database {database}: there is no earlier backup to be its parent; take a FULL first, use type AUTO, or set fallbackToFull"
    )]
    DiffWithoutParent {
        /// The database.
        database: DatabaseName,
    },
    /// Earlier backups exist but none can be a parent, and `fallbackToFull = false`.
    #[error("cannot take a DIFF of database {database}: none of its {} earlier backups is usable as a parent (first: {}); run `catena check`, or set fallbackToFull to take a FULL", skipped.len(), skipped.first().map(|s| format!("{}: {}", s.artifact, s.why)).unwrap_or_default())]
    NoUsableParent {
        /// The database.
        database: DatabaseName,
        /// The candidates and why each was skipped.
        skipped: Vec<SkippedParent>,
    },
    /// The source cannot produce changes since the parent, and `fallbackToFull = false`.
    #[error(
        "cannot take a DIFF of database {database} against {parent}: {why}; take a FULL or set fallbackToFull"
    )]
    SourceCannotDiff {
        /// The database.
        database: DatabaseName,
        /// The chosen parent.
        parent: ArtifactId,
        /// Why not.
        why: String,
    },
    /// A DIFF failed at run time, and `fallbackToFull = false`.
    #[error(
        "DIFF of database {database} against {parent} failed: {why}; run `catena check`, or set fallbackToFull to take a FULL"
    )]
    DiffFailed {
        /// The database.
        database: DatabaseName,
        /// The parent.
        parent: ArtifactId,
        /// What went wrong.
        why: String,
    },
    /// The database has no backups at all.
    #[error(
        "database {database} has no backups here; check the database name and the storage location (`catena inspect`)"
    )]
    NoBackups {
        /// The database.
        database: DatabaseName,
    },
    /// The database has backups, but none is usable.
    #[error(
        "database {database} has backups but none is usable ({problems} problems found); run `catena check` for details"
    )]
    NoUsableBackup {
        /// The database.
        database: DatabaseName,
        /// How many catalog problems there are.
        problems: usize,
    },
    /// No usable backup lies before the requested bound.
    #[error(
        "database {database} has no usable backup before {bound}; choose a later point (`catena inspect` lists them)"
    )]
    NothingBefore {
        /// The database.
        database: DatabaseName,
        /// The bound, for people.
        bound: String,
    },
    /// A new backup's positions cannot be chosen without reusing one.
    #[error(
        "cannot number the next backup of {database}: the manifest of {artifact} cannot be read, so the highest position used is unknown and a new backup could reuse one; restore that object from a copy, or move it out of the repository after checking it (`catena check {database}`)"
    )]
    PositionsUnknown {
        /// The database.
        database: DatabaseName,
        /// The artifact whose manifest is unreadable.
        artifact: ArtifactId,
    },
    /// The newest backup cannot be used; an older point is not restored (or aggregated)
    /// unasked.
    #[error(
        "the newest backup of {database}, {artifact}, cannot be used: {why}; using an older point without being asked would not be what was asked. {hint}"
    )]
    NewestUnusable {
        /// The database.
        database: DatabaseName,
        /// The newest artifact.
        artifact: ArtifactId,
        /// Why it is unusable.
        why: String,
        /// How to restore the newest usable point on purpose, or why none is.
        hint: String,
    },
    /// A composed state that a restore would refuse (see [`crate::check_restorable`]).
    #[error("{path}: {why}")]
    Unrestorable {
        /// The entry.
        path: String,
        /// Why, for people.
        why: String,
    },
    /// The named artifact is not in the catalog.
    #[error("artifact {artifact} was not found; `catena inspect` lists the artifacts")]
    ArtifactNotFound {
        /// The artifact.
        artifact: ArtifactId,
    },
    /// The named artifact exists but cannot be restored.
    #[error(
        "artifact {artifact} cannot be restored: {why}; run `catena check`, or pick another point"
    )]
    ArtifactUnusable {
        /// The artifact.
        artifact: ArtifactId,
        /// Why.
        why: Box<Unusable>,
    },
    /// A retention policy that would keep nothing or everything by accident.
    #[error("invalid expire policy: {why}")]
    InvalidExpirePolicy {
        /// What is wrong.
        why: &'static str,
    },
    /// A block of a size the format does not allow.
    #[error(
        "block of {size} bytes is out of bounds: blocks hold 1 byte to 64 MiB; choose a block size in that range"
    )]
    InvalidBlockSize {
        /// The size given.
        size: u64,
    },
    /// The compressor failed.
    #[error("compression failed: {why}")]
    Compression {
        /// What zstd said.
        why: String,
    },
    /// An index whose fields disagree.
    #[error("index is invalid: {why}")]
    InvalidIndex {
        /// What is wrong.
        why: String,
    },
}
