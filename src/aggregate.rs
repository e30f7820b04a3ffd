//! Aggregate: collapse a chain into one new FULL with the same state digest, then (with
//! `keep_old_backup = false`) delete the old chain, never before, and never an artifact a
//! remaining one depends on.

use std::collections::HashSet;
use std::sync::Arc;

use chain_core::{
    AggregateTarget, ArtifactId, ChangeSet, DatabaseName, EntryKind, ManifestBuilder,
};
use futures::StreamExt;
use serde::Serialize;
use storage_backends::upload::{ArtifactWriter, UploadOptions};
use storage_backends::{CancellationToken, layout, read};

use crate::lock::DatabaseLock;
use crate::progress::{Progress, ProgressEvent};
use crate::{Error, Repository};

/// Options of an aggregation (the seed's `aggregate.*`).
#[derive(Clone, Debug)]
pub struct AggregateOptions {
    /// Which chain: the latest (default) or the one ending at an artifact.
    pub target: AggregateTarget,
    /// Keep the old chain (`keepOldBackup`).
    pub keep_old_backup: bool,
    /// How the new FULL is written.
    pub upload: UploadOptions,
    /// Blocks read at once.
    pub blocks_in_flight: usize,
    /// Cancels; nothing is committed or deleted.
    pub cancel: CancellationToken,
}

impl Default for AggregateOptions {
    fn default() -> Self {
        Self {
            target: AggregateTarget::Latest,
            keep_old_backup: false,
            upload: UploadOptions::default(),
            blocks_in_flight: 8,
            cancel: CancellationToken::new(),
        }
    }
}

/// What an aggregation of one database did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AggregateReport {
    /// The database.
    pub database: String,
    /// The chain collapsed, FULL first.
    pub chain: Vec<String>,
    /// The new FULL (`None` when the chain was a single FULL already).
    pub artifact: Option<String>,
    /// The state digest, the same before and after.
    pub state_digest: String,
    /// Artifacts deleted after the commit.
    pub deleted: Vec<String>,
    /// Artifacts of the chain kept, with why.
    pub kept: Vec<String>,
    /// Artifacts an earlier, interrupted aggregate had promised to delete, deleted first.
    pub finished_interrupted: Vec<String>,
}

/// Aggregates every database matching `pattern` (globs `*`, `?`; comma lists).
pub async fn aggregate(
    repo: &Repository,
    pattern: &str,
    options: &AggregateOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Vec<AggregateReport>, Error> {
    let dbs = repo.databases_matching(pattern).await?;
    if dbs.is_empty() {
        return Err(Error::Options(format!(
            "no database here matches {pattern:?}; `catena inspect` lists the databases"
        )));
    }
    let mut out = Vec::new();
    for db in dbs {
        out.push(aggregate_one(repo, &db, options, progress).await?);
    }
    Ok(out)
}

/// Aggregates one database.
pub async fn aggregate_one(
    repo: &Repository,
    db: &DatabaseName,
    options: &AggregateOptions,
    progress: &Arc<dyn Progress>,
) -> Result<AggregateReport, Error> {
    let lock = repo.lock(db, "aggregate").await?;
    let result = aggregate_locked(repo, db, options, progress, &lock).await;
    lock.release().await;
    result
}

async fn aggregate_locked(
    repo: &Repository,
    db: &DatabaseName,
    options: &AggregateOptions,
    progress: &Arc<dyn Progress>,
    lock: &DatabaseLock,
) -> Result<AggregateReport, Error> {
    let mut view = repo.catalog(db).await?;
    // Deletions an earlier aggregate promised and was stopped before finishing come first.
    let finished = finish_superseded(repo, &view, lock).await?;
    if !finished.deleted.is_empty() {
        tracing::info!(database = %db, deleted = finished.deleted.len(), "finished the deletions of an interrupted aggregate");
        view = repo.catalog(db).await?;
    }
    if !options.keep_old_backup {
        Repository::ensure_all_readable(&view, "aggregate")?;
    }
    // A target that the finished deletions removed was the end of a chain aggregated
    // already: its state is that FULL's.
    let target = match &options.target {
        AggregateTarget::Artifact(t) if view.catalog.get(t).is_none() => view
            .catalog
            .artifacts()
            .find(|m| m.supersedes.last() == Some(t))
            .map_or_else(
                || options.target.clone(),
                |full| AggregateTarget::Artifact(full.id.clone()),
            ),
        t => t.clone(),
    };
    let plan = chain_core::plan_aggregate(&view.catalog, &target, options.keep_old_backup)?;
    let target = plan.chain.last().expect("a plan has a chain").clone();
    let mut report = AggregateReport {
        database: db.to_string(),
        chain: plan.chain.iter().map(ToString::to_string).collect(),
        artifact: None,
        state_digest: plan.state_digest.to_string(),
        deleted: Vec::new(),
        kept: Vec::new(),
        finished_interrupted: finished.deleted,
    };
    if plan.already_full {
        return Ok(report);
    }
    let cs = repo.state_of(&view.catalog, &target).await?;
    progress.event(ProgressEvent::DatabaseStarted {
        database: db.to_string(),
        operation: "aggregate",
        total_bytes: Some(cs.state.logical_bytes()),
    });

    let id = ArtifactId::new(db.clone(), jiff::Timestamp::now(), rand::random());
    let mut writer = ArtifactWriter::new(
        Arc::clone(repo.store()),
        layout::data_key(&id),
        HashSet::new(),
        options.upload.clone(),
        Some(cs.state.logical_bytes()),
    )?
    .with_cancellation(options.cancel.clone());
    for e in cs.state.entries() {
        let EntryKind::File { blocks, .. } = &e.kind else {
            continue;
        };
        let located = cs.locate(blocks, e.path.as_str())?;
        let (database, p) = (db.to_string(), Arc::clone(progress));
        let stream =
            read::read_blocks_at(Arc::clone(repo.store()), located, options.blocks_in_flight)
                .inspect(move |b| {
                    if let Ok(b) = b {
                        p.event(ProgressEvent::Bytes {
                            database: database.clone(),
                            bytes: b.len() as u64,
                        });
                    }
                });
        let written = writer.write_blocks(stream).await;
        match written {
            Ok(refs) if refs == *blocks => {}
            Ok(_) => {
                writer.abort().await;
                return Err(Error::Inconsistent {
                    what: e.path.to_string(),
                    why: "its blocks changed while aggregating".into(),
                });
            }
            Err(storage_backends::Error::Cancelled) => return Err(Error::Cancelled),
            Err(err) => {
                writer.abort().await;
                return Err(err.into());
            }
        }
    }
    let stored = writer.finish().await?;
    let decision = crate::backup::aggregated_decision(
        plan.positions,
        format!(
            "aggregated from {} artifacts ending at {target}",
            plan.chain.len()
        ),
    );
    // Same blocks, same entries: the new FULL's state digest is the chain's by construction
    // (chain_state verified the chain's digest, write_blocks checked every block).
    let mut builder =
        ManifestBuilder::new(id.clone(), decision).source("aggregated_from", target.to_string());
    if !options.keep_old_backup {
        builder = builder.supersedes(plan.chain.clone());
    }
    let manifest = crate::backup::commit_state(
        repo,
        lock,
        &id,
        builder,
        &cs.state,
        ChangeSet::full(&cs.state),
        &stored,
        &options.upload,
    )
    .await?;
    report.artifact = Some(id.to_string());
    progress.event(ProgressEvent::Committed {
        database: db.to_string(),
        artifact: id.to_string(),
        kind: "FULL".into(),
        empty: false,
        stored_bytes: manifest.sizes.stored_bytes,
    });

    if !options.keep_old_backup {
        // Plan the deletions again on what is there now (a DIFF committed meanwhile on the
        // old chain keeps its parents), by the same rule that finishes deletions an
        // interrupted aggregate left: the new FULL's manifest names the chain it supersedes.
        let view = repo.catalog(db).await?;
        let finished = finish_superseded(repo, &view, lock).await?;
        report.deleted = finished.deleted;
        report.kept = finished.kept;
    }
    Ok(report)
}

/// What [`finish_superseded`] deleted and kept.
pub(crate) struct Finished {
    /// Deleted artifacts.
    pub deleted: Vec<String>,
    /// Kept members, with why.
    pub kept: Vec<String>,
}

/// Carries out [`chain_core::plan_superseded`]: deletes what aggregated FULLs supersede and
/// is still here, as their aggregates promised (an aggregate killed between its commit and
/// its deletions leaves that to the next aggregate or expire). Each superseding FULL's
/// index must compose to its recorded state digest first, so that a damaged manifest does
/// not get a chain deleted; nothing is deleted while any manifest is unreadable.
pub(crate) async fn finish_superseded(
    repo: &Repository,
    view: &crate::CatalogView,
    lock: &DatabaseLock,
) -> Result<Finished, Error> {
    let plan = chain_core::plan_superseded(&view.catalog);
    let kept = plan
        .keep
        .iter()
        .map(|k| format!("{} ({:?})", k.artifact, k.reason))
        .collect();
    if plan.delete.is_empty() {
        return Ok(Finished {
            deleted: Vec::new(),
            kept,
        });
    }
    Repository::ensure_all_readable(view, "deleting a superseded chain")?;
    for full in &plan.by {
        repo.state_of(&view.catalog, full).await?;
    }
    let mut deleted = Vec::new();
    for d in &plan.delete {
        if let Some(m) = view.catalog.get(&d.artifact) {
            lock.ensure_held().await?;
            repo.delete_artifact(m).await?;
            deleted.push(d.artifact.to_string());
        }
    }
    Ok(Finished { deleted, kept })
}
