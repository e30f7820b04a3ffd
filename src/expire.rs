//! Expire: delete old chains under a retention policy, children before parents, manifests
//! before their objects, never orphaning anything (chain-core's plan).

use chain_core::{DatabaseName, ExpirePolicy};
use jiff::Timestamp;
use serde::Serialize;

use crate::lock::DatabaseLock;
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
}

/// Expires `db` under `policy` at `now`.
pub async fn expire(
    repo: &Repository,
    db: &DatabaseName,
    policy: &ExpirePolicy,
    now: Timestamp,
    dry_run: bool,
) -> Result<ExpireReport, Error> {
    let lock = if dry_run {
        None
    } else {
        Some(repo.lock(db, "expire").await?)
    };
    let result = expire_locked(repo, db, policy, now, lock.as_ref()).await;
    if let Some(lock) = lock {
        lock.release().await;
    }
    result
}

async fn expire_locked(
    repo: &Repository,
    db: &DatabaseName,
    policy: &ExpirePolicy,
    now: Timestamp,
    lock: Option<&DatabaseLock>,
) -> Result<ExpireReport, Error> {
    let dry_run = lock.is_none();
    let view = repo.catalog(db).await?;
    if !dry_run {
        Repository::ensure_all_readable(&view, "expire")?;
    }
    let plan = chain_core::plan_expire(&view.catalog, policy, now)?;
    let mut deleted = Vec::new();
    for d in &plan.delete {
        if let Some(lock) = lock
            && let Some(m) = view.catalog.get(&d.artifact)
        {
            lock.ensure_held().await?;
            repo.delete_artifact(m).await?;
        }
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
    })
}
