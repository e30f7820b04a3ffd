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
use storage_backends::assemble::{self, AssemblyJob};
use storage_backends::upload::{ArtifactWriter, KnownBlocks, StoredData, UploadOptions};
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
    /// How the new FULL's data object is made (see [`CopyMode`]).
    pub copy: CopyMode,
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
            copy: CopyMode::Auto,
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
    /// How the new FULL was made and what passed through the client (`None` when no FULL
    /// was written).
    pub copy: Option<CopyReport>,
}

/// How an aggregation makes the new FULL's data object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyMode {
    /// The store's ranged server-side copy where it has one, else [`CopyMode::Client`].
    #[default]
    Auto,
    /// The store's ranged server-side copy; an error where the store has none.
    Server,
    /// The records are read and uploaded as they are, by the client (no decoding).
    Client,
    /// The first wave's way: every block is read, decoded, verified, compressed and
    /// uploaded again (kept for comparison, and to rewrite records with new settings).
    Reencode,
}

impl std::str::FromStr for CopyMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "auto" => Ok(Self::Auto),
            "server" => Ok(Self::Server),
            "client" => Ok(Self::Client),
            "reencode" => Ok(Self::Reencode),
            other => Err(Error::Options(format!(
                "copy {other:?}: use auto, server, client or reencode"
            ))),
        }
    }
}

/// How the new FULL was made, and the bytes that moved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CopyReport {
    /// `server` (with the method), `client` or `reencode`.
    pub method: String,
    /// Bytes of the new data object.
    pub data_bytes: u64,
    /// Bytes the store copied itself.
    pub server_bytes: u64,
    /// Bytes the client read from the store (sent parts and verification included).
    pub client_read_bytes: u64,
    /// Bytes the client sent to the store.
    pub client_sent_bytes: u64,
    /// Parts of the new data object (0 for a re-encode, whose upload cuts its own).
    pub parts: usize,
    /// Records read back and verified before the commit.
    pub verified_records: usize,
    /// Bytes of those records (included in `client_read_bytes`).
    pub verified_bytes: u64,
    /// Why `auto` fell back from the store's copy to the client's, if it did.
    pub fallback: Option<String>,
}

/// Aggregates one database's chain (the latest, or the one [`AggregateOptions::target`]
/// names) into a new FULL, under the database's lock. For the chart's `aggregate.database`
/// pattern, [`Repository::databases_matching`] lists the databases to call it for.
pub async fn aggregate(
    repo: &Repository,
    db: &DatabaseName,
    options: &AggregateOptions,
    progress: &Arc<dyn Progress>,
) -> Result<AggregateReport, Error> {
    let options = &AggregateOptions {
        upload: repo.upload_options(&options.upload),
        ..options.clone()
    };
    repo.with_lock(db, "aggregate", async |lock| {
        aggregate_locked(repo, db, options, progress, lock).await
    })
    .await
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
        copy: None,
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
    // Records keep the block size they were written with: the new FULL's manifest states
    // the chain's smallest, which bounds its index as the chain's own manifests did.
    let block_size = plan
        .chain
        .iter()
        .filter_map(|a| view.catalog.get(a))
        .map(|m| m.block_size)
        .min()
        .unwrap_or(options.upload.block_size);
    let upload = UploadOptions {
        block_size,
        ..options.upload.clone()
    };
    let made = match options.copy {
        CopyMode::Reencode => reencode(repo, db, &cs, &id, options, progress).await,
        mode => assemble_full(repo, db, &plan.chain, &cs, &id, mode, options, progress).await,
    };
    let (stored, copy) = match made {
        Ok(made) => made,
        Err(Error::Cancelled) => return Err(Error::Cancelled),
        // A source that went away after the catalog was read (deleted by someone else)
        // explains any failure better than the store's words for it.
        Err(e) => return Err(gone_source(repo, &plan.chain).await.unwrap_or(e)),
    };
    report.copy = Some(copy);
    let decision = chain_core::BackupDecision::aggregated(
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
    lock.ensure_held_for_commit(repo.store().as_ref(), &stored)
        .await?;
    let manifest = storage_backends::commit::commit_state(
        repo.store(),
        &id,
        builder,
        &cs.state.summary(),
        ChangeSet::between_owned(&chain_core::State::new(), cs.state),
        stored,
        &upload,
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

/// Writes the new FULL's data object by copying the chain's records as they are: by the
/// store itself where it can ([`CopyMode::Auto`], [`CopyMode::Server`]), else through the
/// client; then verifies it before anything names it.
#[allow(clippy::too_many_arguments)]
async fn assemble_full(
    repo: &Repository,
    db: &DatabaseName,
    chain: &[ArtifactId],
    cs: &crate::ChainState,
    id: &ArtifactId,
    mode: CopyMode,
    options: &AggregateOptions,
    progress: &Arc<dyn Progress>,
) -> Result<(StoredData, CopyReport), Error> {
    let mut server = match (mode, repo.server_copy()) {
        (CopyMode::Client, _) | (CopyMode::Auto, None) => None,
        (_, Some(copy)) => Some(Arc::clone(copy)),
        (_, None) => {
            return Err(Error::Options(format!(
                "--copy server: {} has no ranged server-side copy (Catena has it for S3 and S3-compatible stores, local directories and memory); use --copy auto, which copies through the client here",
                repo.description()
            )));
        }
    };
    let sources: Vec<object_store::path::Path> = chain.iter().map(layout::data_key).collect();
    let number: std::collections::HashMap<&object_store::path::Path, usize> =
        sources.iter().enumerate().map(|(i, p)| (p, i)).collect();
    // Every block of the state once, where the chain stores it.
    let mut seen = HashSet::new();
    let mut records = Vec::new();
    for e in cs.state.entries() {
        let EntryKind::File { blocks, .. } = &e.kind else {
            continue;
        };
        for (key, location) in cs.locate(blocks, e.path.as_str())? {
            if !seen.insert(location.digest) {
                continue;
            }
            let source = *number.get(&key).ok_or_else(|| Error::Inconsistent {
                what: e.path.to_string(),
                why: format!(
                    "block {} is stored in {key}, outside the chain",
                    location.digest
                ),
            })?;
            records.push(chain_core::SourceRecord { source, location });
        }
    }
    let limits = server
        .as_ref()
        .map_or(chain_core::PartLimits::NONE, |c| c.limits());
    let plan = chain_core::plan_assembly(records, &limits)?;
    let mut method = match &server {
        Some(c) => format!("server ({})", c.method()),
        None => "client (records copied as they are)".to_owned(),
    };
    if plan.blocks.is_empty() {
        // Only empty files and directories: no data object.
        let stored = StoredData {
            object: None,
            locations: Vec::new(),
            block_bytes: 0,
        };
        let copy = CopyReport {
            method,
            ..CopyReport::default()
        };
        return Ok((stored, copy));
    }
    let dest = layout::data_key(id);
    let job = AssemblyJob {
        store: repo.store(),
        dest: &dest,
        sources: &sources,
        plan: &plan,
        cancel: &options.cancel,
    };
    let discard_on_error = |r: Result<assemble::AssemblyCheck, storage_backends::Error>| async {
        if r.is_err() {
            assemble::discard(repo.store().as_ref(), &dest).await;
        }
        r
    };
    let first =
        discard_on_error(assemble_and_verify(repo, server.as_deref(), &job, &options.upload).await)
            .await;
    let mut fallback = None;
    let check = match first {
        Ok(check) => check,
        Err(storage_backends::Error::Cancelled) => return Err(Error::Cancelled),
        Err(e) if mode == CopyMode::Auto && server.is_some() => {
            // A source that is gone is as gone for the client: no second try.
            if let Some(gone) = gone_source(repo, chain).await {
                return Err(gone);
            }
            // `auto` copies where the store can; where its copy fails, the client does.
            tracing::warn!(database = %db, error = %e, "the store's server-side copy failed; copying through the client");
            fallback = Some(format!(
                "the store's server-side copy failed ({e}); the records were copied through the client"
            ));
            server = None;
            method = "client (records copied as they are)".to_owned();
            match discard_on_error(assemble_and_verify(repo, None, &job, &options.upload).await)
                .await
            {
                Ok(check) => check,
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    progress.event(ProgressEvent::Bytes {
        database: db.to_string(),
        bytes: cs.state.logical_bytes(),
    });
    let (server_bytes, client_bytes) = match &server {
        Some(_) => (plan.server_bytes, plan.client_bytes),
        None => (0, plan.size),
    };
    let copy = CopyReport {
        method,
        data_bytes: plan.size,
        server_bytes,
        client_read_bytes: client_bytes + check.bytes,
        client_sent_bytes: client_bytes,
        parts: plan.parts.len(),
        verified_records: check.records,
        verified_bytes: check.bytes,
        fallback,
    };
    let stored = StoredData {
        object: Some(assemble::assembled_object(&dest, &plan)),
        block_bytes: plan.blocks.iter().map(|b| u64::from(b.len)).sum(),
        locations: plan.blocks,
    };
    Ok((stored, copy))
}

/// Writes the new FULL by reading, decoding and verifying every block of the state and
/// compressing and uploading it again ([`CopyMode::Reencode`]).
async fn reencode(
    repo: &Repository,
    db: &DatabaseName,
    cs: &crate::ChainState,
    id: &ArtifactId,
    options: &AggregateOptions,
    progress: &Arc<dyn Progress>,
) -> Result<(StoredData, CopyReport), Error> {
    let mut writer = ArtifactWriter::new(
        Arc::clone(repo.store()),
        layout::data_key(id),
        KnownBlocks::default(),
        options.upload.clone(),
        Some(cs.state.logical_bytes()),
    )?
    .with_cancellation(options.cancel.clone());
    let mut read_bytes = 0u64;
    for e in cs.state.entries() {
        let EntryKind::File { blocks, .. } = &e.kind else {
            continue;
        };
        let located = cs.locate(blocks, e.path.as_str())?;
        read_bytes += located
            .iter()
            .map(|(_, l)| u64::from(l.stored_len))
            .sum::<u64>();
        let (database, p) = (db.to_string(), Arc::clone(progress));
        let stream = read::read_blocks_at(
            Arc::clone(repo.store()),
            located,
            options.blocks_in_flight,
            repo.key().cloned(),
        )
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
    let size = stored.object.as_ref().map_or(0, |o| o.size);
    let copy = CopyReport {
        method: "reencode".into(),
        data_bytes: size,
        server_bytes: 0,
        client_read_bytes: read_bytes,
        client_sent_bytes: size,
        parts: 0,
        verified_records: 0,
        verified_bytes: 0,
        fallback: None,
    };
    Ok((stored, copy))
}

/// The error for the first data object of `chain` that is no longer in the store, if any.
async fn gone_source(repo: &Repository, chain: &[ArtifactId]) -> Option<Error> {
    for id in chain {
        let key = layout::data_key(id);
        let found = object_store::ObjectStoreExt::head(repo.store().as_ref(), &key).await;
        if let Err(object_store::Error::NotFound { .. }) = found {
            return Some(Error::Inconsistent {
                what: key.to_string(),
                why: format!(
                    "this data object of {id}, on the chain being aggregated, is gone: it was there when aggregate read the catalog, so someone deleted it meanwhile; nothing was committed or deleted"
                ),
            });
        }
    }
    None
}

/// Assembles `job` by `copy` (the client's raw copy when `None`) and verifies the result.
async fn assemble_and_verify(
    repo: &Repository,
    copy: Option<&dyn storage_backends::assemble::ServerCopy>,
    job: &AssemblyJob<'_>,
    upload: &UploadOptions,
) -> Result<assemble::AssemblyCheck, storage_backends::Error> {
    match copy {
        Some(copy) => copy.assemble(job).await?,
        None => assemble::client_copy(job, upload).await?,
    }
    assemble::verify_assembled(repo.store(), job.dest, job.plan, repo.key().cloned()).await
}
