//! # Catena: backups as chains of immutable artifacts in object storage
//!
//! Catena keeps backups of data sets ("databases", one directory tree each) as chains of
//! immutable FULL and DIFF artifacts in object storage (S3 and S3-compatible stores, Google
//! Cloud Storage, Azure Blob Storage, or a local directory). It decides FULL, DIFF or AUTO
//! with Neo4j's `preferDiffAsParent` and `fallbackToFull` rules, aggregates a chain into one
//! FULL, checks consistency, expires old chains and restores any point.
//!
//! The workspace has three layers:
//!
//! - [`chain_core`]: the pure model and planners;
//! - [`storage_backends`]: object stores, credentials and the streaming pipelines;
//! - this crate: the engine that carries out chain-core's plans over storage:
//!   [`backup()`], [`restore()`], [`aggregate()`], [`check()`], [`inspect()`], [`expire()`],
//!   all over a [`Repository`], reading data from a [`BackupSource`] such as
//!   [`DirectorySource`], reporting [`ProgressEvent`]s, cancellable with a
//!   [`CancellationToken`].
//!
//! Every operation has one shape: `op(&repo, <what>, &OpOptions, &progress) ->
//! Result<OpReport, Error>`, each options struct with a [`CancellationToken`], each report
//! `Serialize`; [`Error::is_permanent`] tells a failure that may pass from one a retry
//! cannot mend. Tools that run the Neo4j chart's job use, with the default `chart` feature,
//! `values` (the values file and the one merge of storage settings) and `schedule` (the
//! CronJob's runner).
//!
//! A DIFF needs nothing but the bucket: the parent's state is composed from the chain's
//! indexes, so every run can be on a new machine.
//!
//! ## Example
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use catena::*;
//!
//! let data = tempfile::tempdir()?;
//! std::fs::write(data.path().join("store.db"), b"nodes and relationships")?;
//! let repo = Repository::new(StorageConfig::from_url("memory://")?.build().await?);
//! let db = chain_core::DatabaseName::new("neo4j")?;
//! let progress: Arc<dyn Progress> = Arc::new(NoProgress);
//!
//! let source: Arc<dyn BackupSource> = Arc::new(DirectorySource::new(data.path()));
//! let report = backup(&repo, vec![(db.clone(), source)], &BackupOptions::default(), &progress).await?;
//! assert!(report.succeeded());
//!
//! let into = tempfile::tempdir()?;
//! let restored = restore(&repo, &db, &RestoreOptions::new(into.path().join("neo4j")), &progress).await?;
//! assert_eq!(std::fs::read(into.path().join("neo4j/store.db"))?, b"nodes and relationships");
//! assert_eq!(restored.files, 1);
//! # Ok(()) }
//! ```

mod aggregate;
mod backup;
mod check;
mod error;
mod expire;
mod gc;
mod inspect;
pub mod keys;
pub mod lock;
mod progress;
mod repo;
mod restore;
#[cfg(feature = "chart")]
pub mod schedule;
mod source;
#[cfg(feature = "chart")]
pub mod values;

pub use aggregate::{AggregateOptions, AggregateReport, CopyMode, CopyReport, aggregate};
pub use backup::{
    BackupOptions, BackupReport, CHANGED_FILE_RETRIES, DatabaseOutcome, RunRecord, backup,
};
pub use chain_core;
pub use check::{CheckOptions, CheckProblem, CheckReport, check};
pub use error::Error;
pub use expire::{ExpireOptions, ExpireReport, expire};
pub use gc::{GcOptions, GcReport, gc};
pub use inspect::{InspectOptions, InspectReport, InspectRow, InspectScope, inspect};
pub use lock::{DatabaseLock, LockOptions, UnlockOptions, UnlockReport, unlock};
pub use progress::{NoProgress, Progress, ProgressEvent};
pub use repo::{BlockMap, CatalogView, ChainState, Repository, Unreadable};
pub use restore::{RestoreOptions, RestoreReport, restore};
pub use source::{
    BackupSource, DatabaseScan, DirectorySource, EntrySender, MetadataLevel, SkippedEntry,
    SourceEntry, SourceKind, SourceListing,
};
pub use storage_backends;
pub use storage_backends::{CancellationToken, StorageConfig};
