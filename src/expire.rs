//! Expire: delete old chains under a retention policy, children before parents, manifests
//! before their objects, never orphaning anything (chain-core's plan).

use std::sync::Arc;

use chain_core::{DatabaseName, ExpirePolicy};
use jiff::Timestamp;
use serde::Serialize;
use storage_backends::CancellationToken;

use crate::lock::DatabaseLock;
use crate::progress::{Progress, ProgressEvent};
use crate::{Error, Repository};

/// What an expiry did (or, with `dry_run`, would do).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExpireReport {
    /// The database.
    pub database: String,
    /// Deleted artifacts, with the reason.
    pub deleted: Vec<String>,
    /// Kept artifacts, with the first rule that keeps each.
    pub kept: Vec<String>,
    /// Nothing was deleted: a dry run.
    pub dry_run: bool,
    /// Artifacts an earlier, interrupted aggregate had promised to delete, deleted first.
    pub finished_interrupted: Vec<String>,
}

/// Options of an expiry.
#[derive(Clone, Debug)]
pub struct ExpireOptions {
    /// What to keep (`--keep-last`, `--keep-within`).
    pub policy: ExpirePolicy,
    /// The time the policy is applied at (default: when the options were made).
    pub now: Timestamp,
    /// List what would be deleted; delete nothing.
    pub dry_run: bool,
    /// Stops between deletions: what was deleted is gone, the rest is kept, and since the
    /// plan deletes children before parents, nothing is left without its parent.
    pub cancel: CancellationToken,
}

impl ExpireOptions {
    /// Expire by `policy` now.
    pub fn new(policy: ExpirePolicy) -> Self {
        Self {
            policy,
            now: Timestamp::now(),
            dry_run: false,
            cancel: CancellationToken::new(),
        }
    }
}

/// Expires `db` as `options` say.
pub async fn expire(
    repo: &Repository,
    db: &DatabaseName,
    options: &ExpireOptions,
    progress: &Arc<dyn Progress>,
) -> Result<ExpireReport, Error> {
    repo.maintain(db, "expire", options.dry_run, progress, async |lock| {
        expire_locked(repo, db, options, progress, lock).await
    })
    .await
}

async fn expire_locked(
    repo: &Repository,
    db: &DatabaseName,
    options: &ExpireOptions,
    progress: &Arc<dyn Progress>,
    lock: Option<&DatabaseLock>,
) -> Result<ExpireReport, Error> {
    let dry_run = lock.is_none();
    let mut view = repo.catalog(db).await?;
    let mut finished_interrupted = Vec::new();
    if let Some(lock) = lock {
        // Deletions an interrupted aggregate promised come first.
        finished_interrupted = crate::aggregate::finish_superseded(repo, &view, lock)
            .await?
            .deleted;
        if !finished_interrupted.is_empty() {
            view = repo.catalog(db).await?;
        }
        Repository::ensure_all_readable(&view, "expire")?;
    }
    let plan = chain_core::plan_expire(&view.catalog, &options.policy, options.now)?;
    let mut deleted = Vec::new();
    for d in &plan.delete {
        if options.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        if let Some(lock) = lock
            && let Some(m) = view.catalog.get(&d.artifact)
        {
            lock.ensure_held().await?;
            repo.delete_artifact(m).await?;
        }
        progress.event(ProgressEvent::Item {
            database: db.to_string(),
            name: d.artifact.to_string(),
        });
        deleted.push(format!("{} ({:?})", d.artifact, d.reason));
    }
    Ok(ExpireReport {
        database: db.to_string(),
        deleted,
        kept: plan
            .keep
            .iter()
            .map(|k| format!("{} ({:?})", k.artifact, k.reason))
            .collect(),
        dry_run,
        finished_interrupted,
    })
}
