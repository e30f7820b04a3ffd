//! Backup: decide with chain-core, read the parent's state from the bucket (no local state),
//! store only blocks the parent lacks, commit the manifest last; then a run record.

use std::sync::Arc;

use bytes::Bytes;
use chain_core::{
    ArtifactId, ArtifactKind, BackupDecision, BackupRequest, ChangeSetBuilder, DatabaseName, Entry,
    EntryKind, ManifestBuilder, State,
};
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use storage_backends::upload::{ArtifactWriter, UploadOptions};
use storage_backends::{CancellationToken, commit, layout};

use crate::lock::DatabaseLock;
use crate::progress::{Progress, ProgressEvent};
use crate::source::{BackupSource, EntrySender, SourceEntry, SourceKind, SourceListing};
use crate::{Error, Repository};

/// How many times a file that changes while it is read is read again before the backup of
/// its database fails.
pub const CHANGED_FILE_RETRIES: usize = 3;

/// Options of one backup run.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// `type`, `preferDiffAsParent`, `fallbackToFull`.
    pub request: BackupRequest,
    /// Keep a failed database's pieces under `_failed/` instead of removing them.
    pub keep_failed: bool,
    /// Block size, compression, parts in flight, workers.
    pub upload: UploadOptions,
    /// Decide and report, write nothing.
    pub dry_run: bool,
    /// Cancels the run; what was not committed is removed.
    pub cancel: CancellationToken,
    /// What the caller found and does not back up (see [`crate::DirectorySource::scan`]):
    /// recorded in the run record; an entry that `fails_run` makes the run fail.
    pub skipped: Vec<crate::SkippedEntry>,
    /// Read every file, even those whose size, mtime, inode, device and ctime show them
    /// unchanged since the parent (`--force-read`; see docs/DESIGN.md for when to).
    pub force_read: bool,
}

impl Default for BackupOptions {
    fn default() -> Self {
        Self {
            request: BackupRequest::default(),
            keep_failed: false,
            upload: UploadOptions::default(),
            dry_run: false,
            cancel: CancellationToken::new(),
            skipped: Vec::new(),
            force_read: false,
        }
    }
}

/// The outcome for one database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseOutcome {
    /// The database.
    pub database: String,
    /// The decision taken (with its reason code), when one was reached.
    pub decision: Option<BackupDecision>,
    /// The committed artifact, when the backup succeeded (and was not a dry run).
    pub artifact: Option<String>,
    /// Nothing changed since the parent.
    pub empty: bool,
    /// Bytes of file content read.
    pub bytes_read: u64,
    /// Bytes of files not read because the source shows them unchanged since the parent
    /// (same size, mtime, device, inode and ctime): their blocks are the parent's.
    #[serde(default)]
    pub unchanged_bytes: u64,
    /// Bytes stored in the bucket for this artifact.
    pub stored_bytes: u64,
    /// Entries passed over by the source, with why.
    pub warnings: Vec<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    /// The failure cannot pass by running again unchanged (see [`Error::is_permanent`]):
    /// a scheduler does not retry a run whose every failure is permanent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
    /// Where keepFailed kept the pieces, when it did.
    pub kept_failed: Option<String>,
}

impl DatabaseOutcome {
    /// The outcome of a database before anything happened to it.
    fn new(db: &DatabaseName) -> Self {
        Self {
            database: db.to_string(),
            decision: None,
            artifact: None,
            empty: false,
            bytes_read: 0,
            unchanged_bytes: 0,
            stored_bytes: 0,
            warnings: Vec::new(),
            error: None,
            permanent: false,
            kept_failed: None,
        }
    }
}

/// The run record: what one backup run committed, written (sealed) under `_runs/` after all
/// databases, so that a restore can pick one consistent run across databases.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `run-<UTC time>-<random>`.
    pub run_id: String,
    /// When the run started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
    /// Every database of the run.
    pub databases: Vec<DatabaseOutcome>,
    /// Whether every database succeeded and nothing that may hold a database was left out.
    pub ok: bool,
    /// Entries of the source root that were not backed up, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<crate::SkippedEntry>,
}

impl RunRecord {
    /// The record as an encrypted repository stores it (run records are stored in clear):
    /// warnings, errors and skipped names may name files, so they are replaced by what
    /// they were; the command's own report keeps them whole.
    pub fn redacted(&self) -> Self {
        const WITHHELD: &str =
            "withheld from an encrypted repository's run record; see the command's output or log";
        let mut run = self.clone();
        for db in &mut run.databases {
            if !db.warnings.is_empty() {
                db.warnings = vec![format!("{} warning(s), {WITHHELD}", db.warnings.len())];
            }
            if db.error.is_some() {
                db.error = Some(format!("failed; the message is {WITHHELD}"));
            }
        }
        for s in &mut run.skipped {
            s.name = "(withheld)".into();
            s.why = WITHHELD.into();
        }
        run
    }
}

/// What [`backup`] returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupReport {
    /// The run record (also stored, unless a dry run).
    pub run: RunRecord,
    /// Its key, when it was written.
    pub run_record_key: Option<String>,
}

impl BackupReport {
    /// Whether every database was backed up.
    pub fn succeeded(&self) -> bool {
        self.run.ok
    }

    /// Whether the run failed in a way that running it again unchanged cannot mend: every
    /// failed database failed permanently, and nothing else failed the run but entries of
    /// the source root that cannot be backed up (those stay as they are too).
    pub fn failed_permanently(&self) -> bool {
        let mut failed = self.run.databases.iter().filter(|d| d.error.is_some());
        !self.run.ok && failed.all(|d| d.permanent)
    }
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// Backs up each `(database, source)`; each database gets its own artifact. The run fails
/// (`succeeded() == false`) if any database fails; the others' artifacts stay committed
/// and are listed in the run record. Errors only when the run record cannot be written.
pub async fn backup(
    repo: &Repository,
    sources: Vec<(DatabaseName, Arc<dyn BackupSource>)>,
    options: &BackupOptions,
    progress: &Arc<dyn Progress>,
) -> Result<BackupReport, Error> {
    options.upload.validate()?;
    let options = &BackupOptions {
        upload: repo.upload_options(&options.upload),
        ..options.clone()
    };
    let started_at = now();
    let mut outcomes = Vec::new();
    for (db, source) in sources {
        if options.cancel.is_cancelled() {
            // Stopped: the databases not started yet are listed as such, not attempted.
            outcomes.push(DatabaseOutcome {
                error: Some("not started: the run was cancelled".into()),
                permanent: true,
                ..DatabaseOutcome::new(&db)
            });
            continue;
        }
        let outcome = backup_one(repo, &db, source.as_ref(), options, progress).await;
        if !options.dry_run {
            // A dry run starts nothing, so nothing finishes either.
            progress.event(ProgressEvent::DatabaseFinished {
                database: db.to_string(),
                ok: outcome.error.is_none(),
            });
        }
        outcomes.push(outcome);
    }
    let ok =
        outcomes.iter().all(|o| o.error.is_none()) && !options.skipped.iter().any(|s| s.fails_run);
    let run = RunRecord {
        run_id: format!(
            "run-{}-{:016x}",
            started_at.strftime("%Y%m%dT%H%M%S%.6fZ"),
            rand::random::<u64>()
        ),
        started_at,
        finished_at: now(),
        databases: outcomes,
        ok,
        skipped: options.skipped.clone(),
    };
    let run_record_key = if options.dry_run {
        None
    } else {
        let key = Path::from_iter([layout::RUNS_PREFIX, &format!("{}.json", run.run_id)]);
        let stored = if repo.key().is_some() {
            run.redacted()
        } else {
            run.clone()
        };
        commit::put_create(
            repo.store().as_ref(),
            &key,
            Bytes::from(chain_core::sealed::seal(&stored)),
        )
        .await?;
        Some(key.to_string())
    };
    Ok(BackupReport {
        run,
        run_record_key,
    })
}

async fn backup_one(
    repo: &Repository,
    db: &DatabaseName,
    source: &dyn BackupSource,
    options: &BackupOptions,
    progress: &Arc<dyn Progress>,
) -> DatabaseOutcome {
    let mut outcome = DatabaseOutcome::new(db);
    let out = &mut outcome;
    let result = if options.dry_run {
        run_one(repo, db, source, options, progress, None, out).await
    } else {
        repo.with_lock(db, "backup", async |lock| {
            run_one(repo, db, source, options, progress, Some(lock), out).await
        })
        .await
    };
    if let Err(e) = result {
        tracing::debug!(database = %db, error = %e, "backup failed (reported in the outcome)");
        outcome.error = Some(e.to_string());
        outcome.permanent = e.is_permanent();
    }
    outcome
}

async fn run_one(
    repo: &Repository,
    db: &DatabaseName,
    source: &dyn BackupSource,
    options: &BackupOptions,
    progress: &Arc<dyn Progress>,
    lock: Option<&DatabaseLock>,
    outcome: &mut DatabaseOutcome,
) -> Result<(), Error> {
    let view = repo.catalog(db).await?;
    let mut decision =
        chain_core::decide_backup(&view.catalog, options.request, source.capability())?;
    let mut base = State::new();
    if let Some(parent) = decision.parent.clone() {
        // The parent's state only: a backup needs no map of where its blocks are.
        let composed = match view.catalog.chain(&parent) {
            Ok(chain) => repo.composed_state(&chain).await,
            Err(e) => Err(e.into()),
        };
        match composed {
            Ok(state) => base = state,
            Err(e) => {
                tracing::warn!(database = %db, parent = %parent, error = %e, "the parent cannot be used");
                decision = chain_core::fallback_after_diff_failure(&decision, db, &e.to_string())?;
            }
        }
    }
    tracing::info!(database = %db, kind = %decision.kind, reason = %decision.reason, "decided");
    outcome.decision = Some(decision.clone());
    let Some(lock) = lock.filter(|_| !options.dry_run) else {
        return Ok(());
    };

    // The source lists while the walk below reads what it has listed so far: at most
    // LISTING_AHEAD listed entries wait, never the whole listing. Its end (what was
    // skipped or refused, the root's metadata) or its error comes through `ended`, sent
    // before the entries' channel closes.
    let (sender, mut entries) = EntrySender::channel(LISTING_AHEAD);
    let file_bytes = sender.file_bytes();
    let (end_tx, mut ended) = tokio::sync::oneshot::channel();
    let listing = async move {
        let _ = end_tx.send(source.list_streamed(&sender).await);
    };
    let id = ArtifactId::new(db.clone(), now(), rand::random());
    // What the walk finds, against the parent's state: only entries that are new or differ
    // from the parent's are held (a DIFF of unchanged files holds the parent's state once).
    // Small files wait below and are read and stored together (the change set is sorted
    // by path at the end, so the order entries arrive in does not matter).
    let mut listed = ChangeSetBuilder::new(&base);
    let source_error = |conflict: chain_core::ChangeConflict| Error::Source {
        path: conflict.path.as_str().into(),
        why: format!(
            "{}: the listing is inconsistent; report it to the source's authors",
            conflict.why
        ),
        cause: None,
    };
    let walk = async {
        // The first entries are taken before the data object is begun: a listing that
        // ends within them (a database's few large files) gives the object's size, and its
        // parts are planned for it; a longer one is planned when it ends (many small files).
        let mut ahead = std::collections::VecDeque::new();
        let mut end = None;
        while ahead.len() < LISTING_AHEAD {
            match next_listed(&mut entries, &options.cancel).await? {
                Some(e) => ahead.push_back(e),
                None => {
                    end = Some(listing_end(&mut ended, db)?.ok_or_else(|| unfinished(db))?);
                    break;
                }
            }
        }
        let expected = end
            .is_some()
            .then(|| file_bytes.load(std::sync::atomic::Ordering::Relaxed));
        progress.event(ProgressEvent::DatabaseStarted {
            database: db.to_string(),
            operation: "backup",
            total_bytes: expected,
        });
        // The parent's blocks, never stored again: one sorted vector, allocated at its size.
        fn file_blocks(e: &Entry) -> &[chain_core::BlockRef] {
            match &e.kind {
                EntryKind::File { blocks, .. } => blocks,
                _ => &[],
            }
        }
        let mut known = Vec::with_capacity(base.entries().map(|e| file_blocks(e).len()).sum());
        known.extend(base.entries().flat_map(file_blocks).map(|b| b.digest));
        let known = storage_backends::upload::KnownBlocks::new(known);
        let mut writer = ArtifactWriter::new(
            Arc::clone(repo.store()),
            layout::data_key(&id),
            known,
            options.upload.clone(),
            expected,
        )?
        .with_cancellation(options.cancel.clone());

        let small_limit = SMALL_FILE.min(u64::from(options.upload.block_size));
        let mut batch: Vec<SourceEntry> = Vec::new();
        let mut batch_bytes = 0u64;
        loop {
            let next = match ahead.pop_front() {
                Some(e) => Ok(Some(e)),
                None => next_listed(&mut entries, &options.cancel).await,
            };
            // The listing's end arrives before its channel closes: once it is in, the
            // object's remaining parts are planned; a failed listing stops the walk.
            let next = next.and_then(|next| {
                if end.is_none() {
                    end = listing_end(&mut ended, db)?;
                    if end.is_some() {
                        let total = file_bytes.load(std::sync::atomic::Ordering::Relaxed);
                        writer.expect_total(total);
                        progress.event(ProgressEvent::TotalKnown {
                            database: db.to_string(),
                            total_bytes: total,
                        });
                    } else if next.is_none() {
                        return Err(unfinished(db));
                    }
                }
                Ok(next)
            });
            let next = match next {
                Ok(next) => next,
                Err(e) => {
                    outcome.kept_failed =
                        fail_writer(repo, writer, &id, &e, options.keep_failed).await;
                    return Err(e);
                }
            };
            // A file the parent records unchanged by its size, mtime and stamp is recorded
            // with the parent's blocks, not read (one lookup, nothing allocated when it is
            // the same).
            let trusted = match next.as_ref() {
                Some(SourceEntry {
                    path,
                    kind: SourceKind::File { size },
                    meta,
                    stamp,
                }) if !options.force_read => {
                    match listed.push_unchanged(path, *size, meta, *stamp) {
                        Ok(trusted) => trusted.then_some(*size),
                        Err(conflict) => {
                            let e = source_error(conflict);
                            outcome.kept_failed =
                                fail_writer(repo, writer, &id, &e, options.keep_failed).await;
                            return Err(e);
                        }
                    }
                }
                _ => None,
            };
            let small = match next.as_ref().map(|e| &e.kind) {
                Some(SourceKind::File { size }) if trusted.is_none() && *size <= small_limit => {
                    Some(*size)
                }
                _ => None,
            };
            if let (Some(size), Some(entry)) = (small, &next) {
                batch_bytes += size;
                batch.push(entry.clone());
            }
            let full = batch.len() >= SMALL_BATCH_FILES || batch_bytes >= SMALL_BATCH_BYTES;
            if !batch.is_empty() && (full || next.is_none()) {
                let files = std::mem::take(&mut batch);
                batch_bytes = 0;
                let read = read_small_files(
                    &mut writer,
                    source,
                    files,
                    db,
                    progress,
                    &mut outcome.bytes_read,
                )
                .await;
                let read = read.and_then(|read| {
                    read.into_iter()
                        .try_for_each(|e| listed.push(e))
                        .map_err(source_error)
                });
                match read {
                    Ok(()) => {}
                    Err(e) => {
                        outcome.kept_failed =
                            fail_writer(repo, writer, &id, &e, options.keep_failed).await;
                        return Err(e);
                    }
                }
            }
            let Some(entry) = next else { break };
            if small.is_some() {
                continue;
            }
            if let Some(bytes) = trusted {
                outcome.unchanged_bytes += bytes;
                progress.event(ProgressEvent::Bytes {
                    database: db.to_string(),
                    bytes,
                });
                continue;
            }
            match read_entry(
                &mut writer,
                source,
                entry,
                db,
                progress,
                &mut outcome.bytes_read,
            )
            .await
            .and_then(|e| listed.push(e).map_err(source_error))
            {
                Ok(()) => {}
                Err(e) => {
                    outcome.kept_failed =
                        fail_writer(repo, writer, &id, &e, options.keep_failed).await;
                    return Err(e);
                }
            }
        }
        // A cancelled upload converts to Error::Cancelled.
        let stored = writer.finish().await?;
        // The loop ends only once the listing's end is in.
        let end = end.ok_or_else(|| unfinished(db))?;
        Ok::<_, Error>((stored, end))
    };
    // The walk ends when the listing has (its channel closed), or first when it fails: the
    // listing is then dropped, and a source blocked sending stops there.
    let walked = {
        let walk = std::pin::pin!(walk);
        let listing = std::pin::pin!(listing);
        match futures::future::select(walk, listing).await {
            futures::future::Either::Left((walked, _)) => walked,
            futures::future::Either::Right(((), walk)) => walk.await,
        }
    };
    let (stored, end) = walked?;
    outcome.warnings = end.skipped;
    let refused = end.refused;
    let listing_root = end.root;
    let root = listing_root.or_else(|| base.root().cloned());
    let finished = if options.cancel.is_cancelled() {
        Err(Error::Cancelled)
    } else {
        listed.finish(root).map_err(source_error)
    };
    let (changes, summary) = match finished {
        Ok(done) => done,
        Err(e) => {
            // Nothing names the data object yet: it goes.
            storage_backends::commit::delete_quietly(
                repo.store().as_ref(),
                &stored
                    .object
                    .iter()
                    .map(|o| o.key.clone())
                    .collect::<Vec<_>>(),
            )
            .await;
            return Err(e);
        }
    };
    let empty = decision.kind == ArtifactKind::Diff && changes.is_empty();
    let mut builder = ManifestBuilder::new(id.clone(), decision).empty(empty);
    // The source's facts (its path, for people) stay out of an encrypted repository's
    // manifests, which are stored in clear.
    if repo.key().is_none() {
        for (k, v) in source.describe() {
            builder = builder.source(k, v);
        }
    }
    lock.ensure_held_for_commit(repo.store().as_ref(), &stored)
        .await?;
    let manifest = commit::commit_state(
        repo.store(),
        &id,
        builder,
        &summary,
        changes,
        stored,
        &options.upload,
    )
    .await?;
    outcome.artifact = Some(id.to_string());
    outcome.empty = empty;
    outcome.stored_bytes = manifest.sizes.stored_bytes;
    progress.event(ProgressEvent::Committed {
        database: db.to_string(),
        artifact: id.to_string(),
        kind: manifest.kind.to_string(),
        empty,
        stored_bytes: manifest.sizes.stored_bytes,
    });
    tracing::info!(database = %db, artifact = %id, kind = %manifest.kind, empty, stored = manifest.sizes.stored_bytes, "committed");
    if !refused.is_empty() {
        return Err(Error::source(
            std::path::PathBuf::from(db.as_str()),
            format!(
                "committed {id} without {} entr{}: {}",
                refused.len(),
                if refused.len() == 1 { "y" } else { "ies" },
                refused.join("; ")
            ),
        ));
    }
    Ok(())
}

/// Listed entries waiting for the walk, at most; also how many are taken before the data
/// object is begun, so that a listing that ends within them plans its parts by its size.
const LISTING_AHEAD: usize = 4096;

/// The next listed entry (`None`: the listing's channel closed), or the run's cancellation.
async fn next_listed(
    entries: &mut tokio::sync::mpsc::Receiver<SourceEntry>,
    cancel: &CancellationToken,
) -> Result<Option<SourceEntry>, Error> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(Error::Cancelled),
        entry = entries.recv() => Ok(entry),
    }
}

/// The listing's end once it has come (`None` while the source is still listing), or the
/// error it failed with.
fn listing_end(
    ended: &mut tokio::sync::oneshot::Receiver<Result<SourceListing, Error>>,
    db: &DatabaseName,
) -> Result<Option<SourceListing>, Error> {
    match ended.try_recv() {
        Ok(end) => end.map(Some),
        Err(tokio::sync::oneshot::error::TryRecvError::Empty) => Ok(None),
        Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Err(unfinished(db)),
    }
}

/// A listing that stopped without its end: never committed as if it were whole.
fn unfinished(db: &DatabaseName) -> Error {
    Error::source(
        std::path::PathBuf::from(db.as_str()),
        "the source's listing stopped without finishing; nothing was committed: run the backup again",
    )
}

/// Files of at most this many bytes (and one block) are read and stored in batches.
const SMALL_FILE: u64 = 256 << 10;
/// A batch of small files: at most this many files...
const SMALL_BATCH_FILES: usize = 256;
/// ...or this many bytes (the batch is held in memory twice: read, and encoded).
const SMALL_BATCH_BYTES: u64 = 4 << 20;
/// Small files read at once, ahead of the writer.
const SMALL_READ_AHEAD: usize = 8;

/// Reads a batch of small listed files, `SMALL_READ_AHEAD` at a time, and stores them in
/// one trip to the writer's workers. A file that changed while it was read (its stat after
/// the read differs from the listing's) goes through [`read_entry`], which reads it again.
async fn read_small_files(
    writer: &mut ArtifactWriter,
    source: &dyn BackupSource,
    files: Vec<SourceEntry>,
    db: &DatabaseName,
    progress: &Arc<dyn Progress>,
    bytes_read: &mut u64,
) -> Result<Vec<Entry>, Error> {
    let read: Vec<(SourceEntry, Bytes, bool)> = futures::stream::iter(files)
        .map(|entry| async move {
            progress.event(ProgressEvent::Item {
                database: db.to_string(),
                name: entry.path.to_string(),
            });
            let chunks: Vec<Bytes> = source
                .open(&entry.path)
                .await?
                .try_collect()
                .await
                .map_err(|e| Error::Source {
                    path: entry.path.as_str().into(),
                    why: format!("reading failed: {e}"),
                    cause: Some(e),
                })?;
            let content = if chunks.len() == 1 {
                chunks.into_iter().next().unwrap_or_default()
            } else {
                Bytes::from(chunks.concat())
            };
            let size = content.len() as u64;
            let now = source.stat(&entry.path).await?;
            let same = now.as_ref().is_some_and(|n| {
                n.kind == (SourceKind::File { size })
                    && n.meta.mtime_ns == entry.meta.mtime_ns
                    && n.stamp == entry.stamp
            }) && entry.kind == (SourceKind::File { size });
            progress.event(ProgressEvent::Bytes {
                database: db.to_string(),
                bytes: size,
            });
            Ok::<_, Error>((entry, content, same))
        })
        .buffered(SMALL_READ_AHEAD)
        .try_collect()
        .await?;
    let (steady, changed): (Vec<_>, Vec<_>) = read.into_iter().partition(|(_, _, same)| *same);
    let contents: Vec<Bytes> = steady.iter().map(|(_, c, _)| c.clone()).collect();
    *bytes_read += contents.iter().map(|c| c.len() as u64).sum::<u64>();
    let blocks = writer.write_small_files(contents).await?;
    let mut out: Vec<Entry> = steady
        .into_iter()
        .zip(blocks)
        .map(|((entry, content, _), blocks)| Entry {
            path: entry.path,
            kind: EntryKind::File {
                size: content.len() as u64,
                blocks,
            },
            meta: entry.meta,
            stamp: entry.stamp,
        })
        .collect();
    for (entry, _, _) in changed {
        tracing::warn!(path = %entry.path, "the file changed while it was read; reading it again");
        out.push(read_entry(writer, source, entry, db, progress, bytes_read).await?);
    }
    Ok(out)
}

/// Reads one listed entry into the artifact: a file's content goes through the writer,
/// re-read when it changed while being read.
async fn read_entry(
    writer: &mut ArtifactWriter,
    source: &dyn BackupSource,
    mut entry: SourceEntry,
    db: &DatabaseName,
    progress: &Arc<dyn Progress>,
    bytes_read: &mut u64,
) -> Result<Entry, Error> {
    let kind = match &entry.kind {
        SourceKind::Directory => EntryKind::Directory,
        SourceKind::Symlink { target } => EntryKind::Symlink {
            target: target.clone(),
        },
        SourceKind::HardLink { target } => EntryKind::HardLink {
            target: target.clone(),
        },
        SourceKind::File { .. } => {
            progress.event(ProgressEvent::Item {
                database: db.to_string(),
                name: entry.path.to_string(),
            });
            let mut attempt = 0;
            loop {
                attempt += 1;
                let stream = source.open(&entry.path).await?;
                let (database, p) = (db.to_string(), Arc::clone(progress));
                let counted = stream.inspect(move |chunk| {
                    if let Ok(c) = chunk {
                        p.event(ProgressEvent::Bytes {
                            database: database.clone(),
                            bytes: c.len() as u64,
                        });
                    }
                });
                let blocks = match writer.write_stream(counted).await {
                    Ok(b) => b,
                    Err(storage_backends::Error::Input(e)) => {
                        return Err(Error::Source {
                            path: entry.path.as_str().into(),
                            why: format!("reading failed: {e}"),
                            cause: Some(e),
                        });
                    }
                    Err(e) => return Err(e.into()),
                };
                let size: u64 = blocks.iter().map(|b| u64::from(b.len)).sum();
                *bytes_read += size;
                let now = source.stat(&entry.path).await?;
                let unchanged = now.as_ref().is_some_and(|n| {
                    n.kind == (SourceKind::File { size })
                        && n.meta.mtime_ns == entry.meta.mtime_ns
                        && n.stamp == entry.stamp
                }) && entry.kind == (SourceKind::File { size });
                if unchanged {
                    break EntryKind::File { size, blocks };
                }
                match now {
                    Some(n)
                        if attempt < CHANGED_FILE_RETRIES
                            && matches!(n.kind, SourceKind::File { .. }) =>
                    {
                        tracing::warn!(path = %entry.path, attempt, "the file changed while it was read; reading it again");
                        entry = n;
                    }
                    _ => {
                        return Err(Error::source(
                            entry.path.as_str(),
                            format!(
                                "the file kept changing while it was read ({attempt} attempts); stop writes to it during the backup"
                            ),
                        ));
                    }
                }
            }
        }
    };
    Ok(Entry {
        path: entry.path,
        kind,
        meta: entry.meta,
        stamp: entry.stamp,
    })
}

/// After a failure while reading: with `keep_failed`, complete what was uploaded and move it
/// under `_failed/` with an error note; otherwise abort the upload. Returns where the pieces
/// were kept.
async fn fail_writer(
    repo: &Repository,
    writer: ArtifactWriter,
    id: &ArtifactId,
    error: &Error,
    keep_failed: bool,
) -> Option<String> {
    if !keep_failed {
        writer.abort().await;
        return None;
    }
    let store = repo.store();
    let stored = match writer.finish().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(artifact = %id, error = %e, "keepFailed: the failed upload could not be completed; nothing kept");
            return None;
        }
    };
    let data_key = layout::data_key(id);
    let kept = layout::failed_key(&data_key);
    if stored.object.is_some()
        && let Err(e) = store.rename(&data_key, &kept).await
    {
        tracing::warn!(artifact = %id, error = %e, "keepFailed: could not move the failed data under _failed/");
    }
    let note_key = layout::failed_key(&Path::from_iter([
        id.database().as_str(),
        &format!("{id}.error.json"),
    ]));
    // Stored in clear: an encrypted repository's note withholds the message, which can
    // name a file (as its run record does).
    let message = if repo.key().is_some() {
        "withheld from an encrypted repository's note; see the command's output or log".into()
    } else {
        error.to_string()
    };
    let note = serde_json::json!({
        "artifact": id.to_string(),
        "error": message,
        "data": stored.object.as_ref().map(|_| kept.to_string()),
        "blocks": stored.locations.len(),
    });
    let _ = commit::put_create(
        store.as_ref(),
        &note_key,
        Bytes::from(chain_core::sealed::seal(&note)),
    )
    .await;
    Some(note_key.to_string())
}

use object_store::ObjectStoreExt;
