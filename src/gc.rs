//! Garbage collection: remove what interrupted runs left under a database's prefix and no
//! manifest references (data and index objects of an artifact that was never committed,
//! objects of an artifact whose deletion was cut short, staging files of a local store),
//! once older than a grace period, so that an upload still in progress is never touched.
//!
//! It never removes an object a manifest names, nor any object of an artifact whose
//! manifest is present but unreadable (check reports those; a person decides). It holds the
//! database's lock while it runs.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chain_core::DatabaseName;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;
use storage_backends::{commit, layout};

use crate::lock::DatabaseLock;
use crate::progress::{Progress, ProgressEvent};
use crate::{Error, Repository};

/// Options of a garbage collection.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Only objects older than this are removed (default 24 hours).
    pub grace: Duration,
    /// List what would be removed; remove nothing.
    pub dry_run: bool,
    /// Stops between removals: what was removed is gone, nothing committed is touched.
    pub cancel: storage_backends::CancellationToken,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(24 * 3600),
            dry_run: false,
            cancel: storage_backends::CancellationToken::new(),
        }
    }
}

/// What a garbage collection removed (or, with `dry_run`, would remove).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// The database.
    pub database: String,
    /// Keys removed (staging files of a local store end in `#<n>`).
    pub removed: Vec<String>,
    /// Their bytes.
    pub bytes_removed: u64,
    /// Unreferenced keys left because they are younger than the grace period.
    pub too_young: Vec<String>,
    /// Nothing was removed: a dry run.
    pub dry_run: bool,
}

/// Collects `db`'s garbage.
pub async fn gc(
    repo: &Repository,
    db: &DatabaseName,
    options: &GcOptions,
    progress: &Arc<dyn Progress>,
) -> Result<GcReport, Error> {
    repo.maintain(db, "gc", options.dry_run, progress, async |lock| {
        gc_locked(repo, db, options, progress, lock).await
    })
    .await
}

async fn gc_locked(
    repo: &Repository,
    db: &DatabaseName,
    options: &GcOptions,
    progress: &Arc<dyn Progress>,
    lock: Option<&DatabaseLock>,
) -> Result<GcReport, Error> {
    let view = repo.catalog(db).await?;
    if lock.is_some() {
        Repository::ensure_all_readable(&view, "garbage collection")?;
    }
    let unreferenced = view.unreferenced();
    let cutoff = SystemTime::now()
        .checked_sub(options.grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);

    let prefix = layout::database_prefix(db);
    let metas: Vec<object_store::ObjectMeta> = repo
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| storage_backends::Error::store("listing", &prefix, e))?;
    let mut report = GcReport {
        database: db.to_string(),
        removed: Vec::new(),
        bytes_removed: 0,
        too_young: Vec::new(),
        dry_run: lock.is_none(),
    };
    for meta in metas {
        let key = meta.location.to_string();
        // An object listed now but not when the catalog was read is left for next time.
        if !unreferenced.contains(&key) {
            continue;
        }
        if SystemTime::from(meta.last_modified) > cutoff {
            report.too_young.push(key);
            continue;
        }
        if let Some(lock) = lock {
            if options.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            lock.ensure_held().await?;
            commit::delete_quietly(repo.store().as_ref(), std::slice::from_ref(&meta.location))
                .await;
            if repo.store().head(&meta.location).await.is_ok() {
                tracing::warn!(%key, "could not remove; left for the next collection");
                continue;
            }
        }
        progress.event(ProgressEvent::Item {
            database: db.to_string(),
            name: key.clone(),
        });
        report.bytes_removed += meta.size;
        report.removed.push(key);
    }
    if let Some(root) = repo.local_root() {
        let staged = storage_backends::staging::staging_files(root, db.as_str()).map_err(|e| {
            Error::source(
                root.join(db.as_str()),
                format!("listing staging files: {e}"),
            )
        })?;
        for f in staged {
            if f.modified > cutoff {
                report.too_young.push(f.key);
                continue;
            }
            if lock.is_some()
                && let Err(e) = std::fs::remove_file(&f.path)
            {
                tracing::warn!(key = %f.key, error = %e, "could not remove a staging file");
                continue;
            }
            report.bytes_removed += f.size;
            report.removed.push(f.key);
        }
    }
    Ok(report)
}

/// Keys of `db`'s local staging files (interrupted writes), for check's report.
pub(crate) fn staging_keys(repo: &Repository, db: &DatabaseName) -> Vec<String> {
    repo.local_root()
        .and_then(|root| storage_backends::staging::staging_files(root, db.as_str()).ok())
        .map(|files| files.into_iter().map(|f| f.key).collect())
        .unwrap_or_default()
}
