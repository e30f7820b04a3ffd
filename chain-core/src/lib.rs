//! # chain-core: Catena's chain model, pure
//!
//! Catena keeps backups of data sets ("databases") as chains of immutable artifacts in
//! object storage: a FULL artifact, then DIFF artifacts that each hold only what changed
//! since their parent. This crate is the model of those chains and every decision about
//! them, written as pure functions: no async, no I/O, no clock (time is an argument), no
//! logging. Everything here is plain data in, plain data out, so all of it is property
//! tested.
//!
//! ## The model
//!
//! - [`ArtifactId`] names an artifact: `<database>-<UTC time>-<random suffix>`, unique
//!   across concurrent writers, sorting by creation time. [`DatabaseName`] is the database.
//! - [`Manifest`] is an artifact's commit record (JSON): kind ([`ArtifactKind`]), parent,
//!   positions `(from, to]` ([`PositionRange`]), times, objects with size and SHA-256, the
//!   digest of the state it restores to, and the [`BackupDecision`] that made it with its
//!   [`ReasonCode`]. Writing the manifest, last, is what commits an artifact.
//! - [`Catalog`] is one database's manifests: the forest their parent links form, every
//!   defect in it ([`CatalogProblem`]) and, per artifact, whether it is usable
//!   ([`Unusable`] says why not).
//! - The state model: a [`State`] is a database's entries at one point; a DIFF stores a
//!   [`ChangeSet`] against its parent's state; [`compose`] applies a chain and
//!   [`State::digest`] fingerprints the result.
//!
//! ## The planners
//!
//! Each computes a plan (plain, serializable data with reasons) that the `catena` engine then
//! carries out against storage:
//!
//! - [`decide_backup`]: FULL or DIFF, which parent, and why (`type` FULL / DIFF / AUTO,
//!   `preferDiffAsParent`, `fallbackToFull`); [`fallback_after_diff_failure`] for a DIFF that
//!   fails at run time.
//! - [`plan_restore`]: the chain to apply for the latest state, an artifact, or the state
//!   before a position or a time.
//! - [`plan_aggregate`]: the chain to collapse into one FULL, and what may be deleted after.
//! - [`plan_expire`]: what a retention policy deletes, never orphaning anything.
//! - [`plan_assembly`]: a new FULL's data object as byte ranges of the chain's data
//!   objects, cut into parts a store copies on its side (aggregation by server-side copy).
//!
//! ## Example
//!
//! The first backup of a database is a FULL; the next, a DIFF against it:
//!
//! ```
//! use chain_core::*;
//!
//! let db = DatabaseName::new("neo4j")?;
//! let mut catalog = Catalog::new(db.clone(), []);
//! let request = BackupRequest::default(); // AUTO, fallbackToFull
//!
//! let first = decide_backup(&catalog, request, SourceCapability::DIRECTORY)?;
//! assert_eq!(first.kind, ArtifactKind::Full);
//! assert_eq!(first.reason, ReasonCode::FullFirstBackup);
//!
//! // Carry it out (the engine uploads the data), then commit its manifest.
//! let id = ArtifactId::new(db.clone(), "2026-11-25T02:00:00Z".parse()?, 0x5eed);
//! let manifest = ManifestBuilder::new(id.clone(), first).build()?;
//! catalog = Catalog::new(db, [manifest]);
//!
//! let second = decide_backup(&catalog, request, SourceCapability::DIRECTORY)?;
//! assert_eq!(second.kind, ArtifactKind::Diff);
//! assert_eq!(second.parent, Some(id.clone()));
//! assert_eq!(second.reason, ReasonCode::DiffFromNewest);
//! assert_eq!(second.positions.to_string(), "(1, 2]");
//!
//! let plan = plan_restore(&catalog, &RestoreTarget::Latest)?;
//! assert_eq!(plan.chain, vec![id]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod aggregate;
mod assemble;
mod catalog;
mod container;
pub mod crypto;
mod decide;
mod digest;
mod error;
mod expire;
pub mod fuzz_checks;
mod id;
mod manifest;
mod position;
mod restore;
pub mod sealed;
mod state;

pub use aggregate::{
    AggregatePlan, AggregateTarget, DeleteReason, KeepReason, PlannedDeletion, PlannedKeep,
    SupersededPlan, plan_aggregate, plan_superseded,
};
pub use assemble::{AssemblyPlan, Part, PartLimits, Segment, SourceRecord, plan_assembly};
pub use catalog::{Catalog, CatalogProblem, Damage, DamageKind, Unusable};
pub use container::{
    BLOCK_HEADER_LEN, BLOCK_MAGIC, BlockListSummary, BlockLocation, CONTAINER_VERSION, DecodeError,
    EncodedBlock, INDEX_HEADER_LEN, INDEX_MAGIC, Index, IndexChanges, MAX_BLOCK_SIZE,
    MAX_INDEX_LEN, decode_block, encode_block, encode_hashed_block, encode_hashed_block_into,
};
pub use crypto::{RepoKey, Secret, block_digest};
pub use decide::{
    BackupDecision, BackupRequest, BackupType, DiffSupport, ReasonCode, SkippedParent,
    SourceCapability, decide_backup, fallback_after_diff_failure,
};
pub use digest::Sha256Digest;
pub use error::Error;
pub use expire::{ExpirePlan, ExpirePolicy, plan_expire};
pub use id::{ArtifactId, DatabaseName, MAX_DATABASE_NAME_LEN};
pub use manifest::{
    ArtifactKind, Compression, DEFAULT_BLOCK_SIZE, ENCRYPTED_MANIFEST_FORMAT_VERSION,
    MANIFEST_FORMAT_VERSION, MAX_KEY_LEN, MAX_MANIFEST_LEN, Manifest, ManifestBuilder,
    OLDEST_MANIFEST_FORMAT_VERSION, ObjectRef, ObjectRole, Sizes,
};
pub use position::{Position, PositionRange};
pub use restore::{RestorePlan, RestoreTarget, plan_restore};
pub use state::{
    BlockRef, ChangeConflict, ChangeSet, ChangeSetBuilder, Entry, EntryKind, EntryPath, FileStamp,
    MAX_COMPONENT_LEN, MAX_PATH_LEN, Metadata, Owner, State, StateSummary, check_restorable,
    compose, compose_owned,
};
