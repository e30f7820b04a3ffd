//! Restore: a chain's state into a directory, every block verified, written into a
//! temporary sibling and renamed at the end; never outside the destination.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use chain_core::{DatabaseName, Entry, EntryKind, EntryPath, Metadata, RestoreTarget};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use storage_backends::CancellationToken;
use storage_backends::read;

use crate::progress::{Progress, ProgressEvent};
use crate::{Error, Repository};

/// Options of a restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// What to restore.
    pub target: RestoreTarget,
    /// The directory that receives the database (created; must not exist or be empty unless
    /// `overwrite`).
    pub destination: PathBuf,
    /// Replace a non-empty destination.
    pub overwrite: bool,
    /// Large files restored at once (default 4): the restore holds at most this many
    /// files' worth of reads in flight (`blocks_in_flight` ranges each); smaller files share
    /// that budget, up to four times as many files at once.
    pub parallel_files: usize,
    /// Blocks read at once per file.
    pub blocks_in_flight: usize,
    /// Cancels the restore; the destination is left as it was.
    pub cancel: CancellationToken,
}

impl RestoreOptions {
    /// Latest state into `destination`, with default parallelism.
    pub fn new(destination: impl Into<PathBuf>) -> Self {
        Self {
            target: RestoreTarget::Latest,
            destination: destination.into(),
            overwrite: false,
            parallel_files: 4,
            blocks_in_flight: 8,
            cancel: CancellationToken::new(),
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoreReport {
    /// The database.
    pub database: String,
    /// The artifact whose state was restored.
    pub artifact: String,
    /// The chain applied, FULL first.
    pub chain: Vec<String>,
    /// The position reached.
    pub position: u64,
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Where.
    pub destination: PathBuf,
    /// The state digest verified.
    pub state_digest: String,
    /// What an interrupted restore had left beside the destination, and what was done with
    /// it (staging directories are removed; a set-aside earlier destination is named).
    pub notes: Vec<String>,
}

fn sibling(dest: &Path, tag: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "restore".into());
    dest.with_file_name(format!(
        ".{name}.catena-{tag}-{:08x}",
        rand::random::<u32>()
    ))
}

fn join(root: &Path, path: &EntryPath) -> PathBuf {
    let mut p = root.to_owned();
    for c in path.components() {
        p.push(c);
    }
    p
}

/// Restores `db` per `options`. See the module documentation.
pub async fn restore(
    repo: &Repository,
    db: &DatabaseName,
    options: &RestoreOptions,
    progress: &Arc<dyn Progress>,
) -> Result<RestoreReport, Error> {
    let dest = &options.destination;
    // Check the destination before reading anything.
    match std::fs::symlink_metadata(dest) {
        Ok(md) if !md.is_dir() => {
            return Err(Error::restore(
                dest,
                "exists and is not a directory; choose another destination",
            ));
        }
        Ok(_) => {
            let non_empty = std::fs::read_dir(dest)
                .map_err(|e| Error::restore_io(dest, e))?
                .next()
                .is_some();
            if non_empty && !options.overwrite {
                return Err(Error::restore(
                    dest,
                    "is not empty; choose an empty or new directory, or pass --overwrite-destination to replace it",
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::restore_io(dest, e)),
    }

    let view = repo.catalog(db).await?;
    // With a manifest unreadable, "the newest state" (or the newest before a bound) cannot
    // be told: it may be the damaged one. Restoring an older point without saying so would
    // be a surprise; a named artifact is restored when its own chain is intact.
    if let (Some(u), false) = (
        view.unreadable.first(),
        matches!(options.target, RestoreTarget::Artifact(_)),
    ) {
        let on_purpose = match view.catalog.newest_chain().and_then(|c| c.last().copied()) {
            Some(m) => format!(
                "to restore the newest readable point on purpose, {} at position {}, give --artifact {}",
                m.id, m.positions.to, m.id
            ),
            None => "no other point is readable".to_owned(),
        };
        return Err(Error::Inconsistent {
            what: u.key.clone(),
            why: format!(
                "this manifest cannot be read ({}), so the newest state cannot be told; {on_purpose}; or restore or remove this object",
                u.why
            ),
        });
    }
    let plan = chain_core::plan_restore(&view.catalog, &options.target)?;
    let cs = repo.state_of(&view.catalog, &plan.target).await?;
    chain_core::check_restorable(&cs.state, |d| cs.blocks.get(d).map(|(_, loc)| loc.len)).map_err(
        |e| Error::Inconsistent {
            what: format!("artifact {}", plan.target),
            why: format!("{e}; `catena check` reports the same"),
        },
    )?;
    progress.event(ProgressEvent::DatabaseStarted {
        database: db.to_string(),
        operation: "restore",
        total_bytes: Some(cs.state.logical_bytes()),
    });

    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::restore_io(parent, e))?;
    }
    let notes = clear_interrupted(dest);
    let tmp = sibling(dest, "restore");
    std::fs::create_dir(&tmp).map_err(|e| Error::restore_io(&tmp, e))?;
    let result = match write_tree(repo, db, &cs, &tmp, options, progress).await {
        Ok(x) => sync_tree(&tmp).await.map(|()| x),
        Err(e) => Err(e),
    };
    let (files, bytes) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    // Swap into place.
    let old = if dest.exists() {
        let old = sibling(dest, "old");
        std::fs::rename(dest, &old).map_err(|e| Error::restore_io(dest, e))?;
        Some(old)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(&tmp, dest) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old, dest);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(Error::restore_io(dest, e));
    }
    // The rename itself is durable once the directory holding it is synced.
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::restore(parent, format!("syncing after the rename: {e}")))?;
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(old);
    }
    progress.event(ProgressEvent::DatabaseFinished {
        database: db.to_string(),
        ok: true,
    });
    Ok(RestoreReport {
        database: db.to_string(),
        artifact: plan.target.to_string(),
        chain: plan.chain.iter().map(ToString::to_string).collect(),
        position: plan.position.0,
        files,
        bytes,
        destination: dest.clone(),
        state_digest: plan.state_digest.to_string(),
        notes,
    })
}

/// Removes the staging directories an interrupted restore into `dest` left beside it
/// (`.<name>.catena-restore-*`: never anything but a partial copy), and names any
/// `.<name>.catena-old-*`: the destination's earlier contents, set aside by a restore that
/// was stopped between its two renames, which only a person should delete.
fn clear_interrupted(dest: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return notes;
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let name = name.to_string_lossy();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return notes;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file_name.strip_prefix(&format!(".{name}.catena-")) else {
            continue;
        };
        let path = entry.path();
        if rest.starts_with("restore-") {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => notes.push(format!(
                    "removed {}, the staging directory of an interrupted restore",
                    path.display()
                )),
                Err(e) => notes.push(format!(
                    "could not remove {}, the staging directory of an interrupted restore: {e}",
                    path.display()
                )),
            }
        } else if rest.starts_with("old-") {
            notes.push(format!(
                "{} holds what {} held before an interrupted restore replaced it; move it back or delete it",
                path.display(),
                dest.display()
            ));
        }
    }
    notes
}

/// Makes everything written under `root` durable with one `syncfs(2)` of its file system,
/// instead of an `fsync` per file and directory: 100,000 small files cost one call, not
/// 100,000 (docs/DESIGN.md, "Why one sync of the file system at the end of a restore?").
async fn sync_tree(root: &Path) -> Result<(), Error> {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&root)
            .and_then(|dir| rustix::fs::syncfs(&dir).map_err(std::io::Error::from))
            .map_err(|e| Error::restore(&root, format!("syncing the restored tree: {e}")))
    })
    .await
    .map_err(|e| Error::restore(Path::new("."), e.to_string()))?
}

/// Where `path` is written under `root`, its parent directory created if a (crafted) state
/// lacks the directory entry.
fn place_for(root: &Path, path: &EntryPath) -> Result<PathBuf, Error> {
    let p = join(root, path);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).map_err(|err| Error::restore_io(parent, err))?;
    }
    Ok(p)
}

fn system_time(ns: i64) -> std::time::SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

async fn write_tree(
    repo: &Repository,
    db: &DatabaseName,
    cs: &crate::repo::ChainState,
    root: &Path,
    options: &RestoreOptions,
    progress: &Arc<dyn Progress>,
) -> Result<(u64, u64), Error> {
    // Directories first (parents before children: path order), then files, then hard links
    // to them, then symbolic links, then directory metadata deepest first, the root last.
    let entries: Vec<&Entry> = cs.state.entries().collect();
    for e in &entries {
        if matches!(e.kind, EntryKind::Directory) {
            let p = join(root, &e.path);
            std::fs::create_dir_all(&p).map_err(|err| Error::restore_io(&p, err))?;
        }
    }
    let mut files: Vec<&Entry> = entries
        .iter()
        .copied()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .collect();
    // Files in the order their first blocks lie in the store, not in path order: a backup
    // reads a directory in the file system's order, and a DIFF's files lie in its own
    // object. Neighbours in the store are restored together (below) and read in order.
    files.sort_by_cached_key(|f| match &f.kind {
        EntryKind::File { blocks, .. } => blocks
            .first()
            .and_then(|b| cs.blocks.get(&b.digest))
            .map(|(key, loc)| (key.as_ref(), loc.offset)),
        _ => None,
    });
    // Many files at once, a bounded number of bytes in flight: each file reserves what its
    // reads can hold at once (its size, at most `blocks_in_flight` ranges), in units of
    // BUDGET_UNIT, from a budget of `parallel_files` such reservations. Small files are
    // latency-bound (a ranged read and trips to the blocking pool each): 16 at once restored
    // 100,000 of them in 7.9-10.0 s against 10.7-11.0 s for 4 (docs/BENCHMARKS.md).
    // Saturating and clamped: the options are a library's public fields, and no value of
    // them may overflow, or ask more of the budget than it holds (a wait for ever).
    let per_file = (options.blocks_in_flight.max(1) as u64).saturating_mul(read::COALESCE_BYTES);
    let budget = (options.parallel_files.max(1) as u64)
        .saturating_mul(per_file.div_ceil(BUDGET_UNIT))
        .min(u64::from(u32::MAX))
        .min(tokio::sync::Semaphore::MAX_PERMITS as u64);
    let units = move |bytes: u64| bytes.min(per_file).div_ceil(BUDGET_UNIT).clamp(1, budget);
    let budget_permits = Arc::new(tokio::sync::Semaphore::new(budget as usize));
    // Runs of neighbouring small files whose blocks lie back to back in one data object: one
    // ranged read and one trip to the blocking pool restore a whole run, instead of a read
    // and two trips per file (100,000 files: 8-9 s against 14-16 s, docs/BENCHMARKS.md).
    let runs = small_file_runs(cs, &files);
    // Indexes, not references, in the stream: a closure over `&Entry` would make this
    // future not `Send` for all lifetimes, so that callers could not spawn it.
    let totals: Vec<(u64, u64)> = futures::stream::iter(runs)
        .map(|run| {
            let budget = Arc::clone(&budget_permits);
            let run = &files[run];
            // A run reserves what a large file does: at most `parallel_files` runs at once
            // (with runs of 4 MiB reserving only their size, 16 runs at once peaked at 155
            // MiB against 111 for this).
            let size = match run {
                [file] => file_size(file),
                _ => u64::MAX,
            };
            async move {
                let _reserved = budget
                    .acquire_many_owned(units(size) as u32)
                    .await
                    .map_err(|e| Error::restore(root, e.to_string()))?;
                if options.cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                match run {
                    [file] => restore_file(repo, db, cs, root, file, options, progress)
                        .await
                        .map(|bytes| (1, bytes)),
                    run => restore_run(repo, db, cs, root, run, progress)
                        .await
                        .map(|bytes| (run.len() as u64, bytes)),
                }
            }
        })
        .buffer_unordered(options.parallel_files.max(1).saturating_mul(4))
        .try_collect()
        .await?;
    for e in &entries {
        if let EntryKind::HardLink { target } = &e.kind {
            // check_restorable made sure the target is a file of this state, written above.
            let p = place_for(root, &e.path)?;
            std::fs::hard_link(join(root, target), &p)
                .map_err(|err| Error::restore(&p, format!("linking to {target}: {err}")))?;
        }
    }
    for e in &entries {
        if let EntryKind::Symlink { target } = &e.kind {
            let p = place_for(root, &e.path)?;
            std::os::unix::fs::symlink(target, &p).map_err(|err| Error::restore_io(&p, err))?;
            // The link's own time, not its target's (std has no lutimes).
            let mtime = filetime::FileTime::from_system_time(system_time(e.meta.mtime_ns));
            filetime::set_symlink_file_times(&p, mtime, mtime)
                .map_err(|err| Error::restore_io(&p, err))?;
        }
    }
    for e in entries.iter().rev() {
        if matches!(e.kind, EntryKind::Directory) {
            let p = join(root, &e.path);
            set_meta(&p, &e.meta)?;
        }
    }
    // The root last: everything above changed its mtime. The staging directory keeps both
    // through the rename into place.
    if let Some(meta) = cs.state.root() {
        set_meta(root, meta)?;
    }
    Ok(totals
        .iter()
        .fold((0, 0), |(files, bytes), (f, b)| (files + f, bytes + b)))
}

fn file_size(e: &Entry) -> u64 {
    match &e.kind {
        EntryKind::File { size, .. } => *size,
        _ => 0,
    }
}

/// Files of at most this size may be restored in a run with their neighbours.
const RUN_FILE_MAX: u64 = 1 << 20;
/// Files in one run at most.
const RUN_FILES_MAX: usize = 256;
/// Stored bytes of one run at most (one ranged read).
const RUN_BYTES_MAX: u64 = 1 << 20;

/// Splits `files` (in the order their bytes lie in the store) into runs restored as one: consecutive files of at most
/// [`RUN_FILE_MAX`] bytes whose blocks, all of them, follow each other without a gap in one
/// data object, at most [`RUN_FILES_MAX`] files and [`RUN_BYTES_MAX`] of stored
/// bytes per run. Any other file is a run of its own. A block the chain does not hold ends
/// a run; restoring that file reports it.
fn small_file_runs(cs: &crate::repo::ChainState, files: &[&Entry]) -> Vec<std::ops::Range<usize>> {
    // Where a file's stored bytes lie, when they are one span of one object.
    let span = |e: &Entry| -> Option<(&object_store::path::Path, u64, u64)> {
        let EntryKind::File { size, blocks } = &e.kind else {
            return None;
        };
        if *size > RUN_FILE_MAX {
            return None;
        }
        let mut span: Option<(&object_store::path::Path, u64, u64)> = None;
        for b in blocks {
            let (key, loc) = cs.blocks.get(&b.digest)?;
            span = match span {
                None => Some((key, loc.offset, loc.range().end)),
                Some((k, start, end)) if k == key && end == loc.offset => {
                    Some((k, start, loc.range().end))
                }
                Some(_) => return None,
            };
        }
        span
    };
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    let mut open: Option<(&object_store::path::Path, u64, u64)> = None;
    for (i, file) in files.iter().enumerate() {
        let this = span(file);
        if let (Some(run), Some((key, start, end)), Some((k, s, e))) = (runs.last_mut(), this, open)
            && run.end == i
            && k == key
            && e == start
            && end - s <= RUN_BYTES_MAX
            && run.len() < RUN_FILES_MAX
        {
            run.end = i + 1;
            open = Some((k, s, end));
            continue;
        }
        runs.push(i..i + 1);
        open = this;
    }
    runs
}

/// Restores a run of small files (see [`small_file_runs`]) with one ranged read of their
/// blocks and one trip to the blocking pool that decodes, verifies and writes them all.
async fn restore_run(
    repo: &Repository,
    db: &DatabaseName,
    cs: &crate::repo::ChainState,
    root: &Path,
    run: &[&Entry],
    progress: &Arc<dyn Progress>,
) -> Result<u64, Error> {
    let mut key = None;
    let mut files = Vec::with_capacity(run.len());
    for e in run {
        let EntryKind::File { size, blocks } = &e.kind else {
            continue;
        };
        let located = cs.locate(blocks, e.path.as_str())?;
        let mut locs = Vec::with_capacity(located.len());
        for (k, loc) in located {
            key.get_or_insert(k);
            locs.push(loc);
        }
        files.push((
            join(root, &e.path),
            e.path.to_string(),
            e.meta.clone(),
            *size,
            locs,
        ));
    }
    let first = files.iter().find_map(|f| f.4.first()).map(|l| l.offset);
    let last = files
        .iter()
        .rev()
        .find_map(|f| f.4.last())
        .map(|l| l.range().end);
    // small_file_runs puts only files with blocks, back to back in one object, in a run.
    let (Some(key), Some(start), Some(end)) = (key, first, last) else {
        return Err(Error::restore(
            root,
            "internal: a run of files without blocks",
        ));
    };
    let stored = read::read_range(repo.store().as_ref(), &key, start..end).await?;
    let repo_key = repo.key().cloned();
    let written = tokio::task::spawn_blocking(move || -> Result<u64, Error> {
        use std::io::Write;
        let mut total = 0u64;
        let mut made: Option<PathBuf> = None;
        for (p, what, meta, size, locs) in files {
            // The parent exists unless a (crafted) state lacks its directory entry.
            if let Some(parent) = p.parent()
                && made.as_deref() != Some(parent)
            {
                std::fs::create_dir_all(parent).map_err(|err| Error::restore_io(parent, err))?;
                made = Some(parent.to_owned());
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .map_err(|err| Error::restore_io(&p, err))?;
            let mut written = 0u64;
            for loc in &locs {
                let block = read::decode_at(&stored, start, loc, &key, repo_key.as_deref())?;
                file.write_all(&block)
                    .map_err(|err| Error::restore_io(&p, err))?;
                written += block.len() as u64;
            }
            check_length(&what, written, size)?;
            file_meta(&file, &meta).map_err(|err| Error::restore_io(&p, err))?;
            total += written;
        }
        Ok(total)
    })
    .await
    .map_err(|e| Error::restore(root, e.to_string()))??;
    progress.event(ProgressEvent::Bytes {
        database: db.to_string(),
        bytes: written,
    });
    Ok(written)
}

fn set_meta(p: &Path, meta: &Metadata) -> Result<(), Error> {
    std::fs::File::open(p)
        .and_then(|file| file_meta(&file, meta))
        .map_err(|err| Error::restore_io(p, err))
}

/// Sets the modification time and the permission bits on an open file or directory.
fn file_meta(file: &std::fs::File, meta: &Metadata) -> std::io::Result<()> {
    file.set_modified(system_time(meta.mtime_ns))?;
    file.set_permissions(std::fs::Permissions::from_mode(meta.mode))
}

async fn restore_file(
    repo: &Repository,
    db: &DatabaseName,
    cs: &crate::repo::ChainState,
    root: &Path,
    e: &Entry,
    options: &RestoreOptions,
    progress: &Arc<dyn Progress>,
) -> Result<u64, Error> {
    let EntryKind::File { size, blocks } = &e.kind else {
        return Ok(0);
    };
    let p = place_for(root, &e.path)?;
    let located = cs.locate(blocks, e.path.as_str())?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .map_err(|err| Error::restore_io(&p, err))?;
    let mut stream = read::read_blocks_at(
        Arc::clone(repo.store()),
        located,
        options.blocks_in_flight,
        repo.key().cloned(),
    );
    // Blocks are gathered into batches of WRITE_BATCH bytes; each batch is written on the
    // blocking pool while the next one downloads and decodes, and every WRITE_BACK_EVERY
    // bytes the kernel's write-back of them is started there too, so that the one sync of
    // the whole tree at the end (the restore is durable before its rename) finds little
    // left to wait for.
    let mut writer = BatchWriter::new(file, p.clone());
    let mut batch: Vec<bytes::Bytes> = Vec::new();
    let mut batch_len = 0usize;
    while let Some(block) = tokio::select! {
        biased;
        () = options.cancel.cancelled() => return Err(Error::Cancelled),
        b = stream.next() => b,
    } {
        let block = block?;
        batch_len += block.len();
        progress.event(ProgressEvent::Bytes {
            database: db.to_string(),
            bytes: block.len() as u64,
        });
        batch.push(block);
        if batch_len >= WRITE_BATCH {
            writer.write(std::mem::take(&mut batch)).await?;
            batch_len = 0;
        }
    }
    writer.write(batch).await?;
    let (file, written) = writer.finish().await?;
    check_length(e.path.as_str(), written, *size)?;
    // On the open file: no second open per file.
    file_meta(&file, &e.meta).map_err(|err| Error::restore_io(&p, err))?;
    Ok(written)
}

/// Bytes handed to one blocking write. Once the page cache throttles writes (a file of a
/// few GiB), a batch waiting and one being written are held beside the reads ahead: 8 MiB
/// batches put a restore's peak 16 MiB higher than 2 MiB ones, at the same speed.
const WRITE_BATCH: usize = 2 << 20;
/// Writes up to this size are done on the calling task instead of the blocking pool.
const INLINE_WRITE_MAX: u64 = 256 << 10;
/// Bytes written between two starts of a restored file's write-back.
const WRITE_BACK_EVERY: u64 = 64 << 20;

/// The unit in which a restore's files reserve their reads in flight (one for any file of
/// up to 64 KiB).
const BUDGET_UNIT: u64 = 64 << 10;

/// A restored file must hold exactly the bytes its index entry records.
fn check_length(what: &str, written: u64, size: u64) -> Result<(), Error> {
    if written == size {
        return Ok(());
    }
    Err(Error::Inconsistent {
        what: what.to_owned(),
        why: format!("restored {written} bytes, the index records {size}"),
    })
}

/// Writes batches of blocks to a file on the blocking pool, one batch at a time, overlapping
/// with the caller's downloads; starts the write-back of every [`WRITE_BACK_EVERY`] bytes
/// without waiting for it (the whole tree is synced at the end, see [`sync_tree`]).
struct BatchWriter {
    file: Option<std::fs::File>,
    pending: Option<tokio::task::JoinHandle<std::io::Result<std::fs::File>>>,
    path: PathBuf,
    write_back: WriteBack,
}

/// Where a file's write-back is to be started: every `every` bytes written, the range since
/// the last start.
#[derive(Debug)]
struct WriteBack {
    every: u64,
    /// Bytes written so far.
    written: u64,
    /// Bytes written since write-back was last started.
    since: u64,
}

impl WriteBack {
    fn new(every: u64) -> Self {
        Self {
            every,
            written: 0,
            since: 0,
        }
    }

    /// Counts `len` more bytes written; once `every` or more have been written since the
    /// last start, the range (offset, length) whose write-back to start now.
    fn count(&mut self, len: u64) -> Option<(u64, u64)> {
        self.written += len;
        self.since += len;
        if self.since < self.every {
            return None;
        }
        let range = (self.written - self.since, self.since);
        self.since = 0;
        Some(range)
    }
}

/// Starts the kernel's write-back of `len` bytes of `file` from `offset`, without waiting
/// for it (`posix_fadvise(POSIX_FADV_DONTNEED)`, which on Linux writes dirty pages back
/// asynchronously and drops only pages that are already clean: the bytes just written stay
/// cached). The restore's one `syncfs` at the end waits for what is still in flight. Advice
/// only: a file system that refuses it is synced at the end all the same.
fn start_write_back(file: &std::fs::File, offset: u64, len: u64) {
    use rustix::fs::{Advice, fadvise};
    fadvise(
        file,
        offset,
        std::num::NonZeroU64::new(len),
        Advice::DontNeed,
    )
    .ok();
}

impl BatchWriter {
    fn new(file: std::fs::File, path: PathBuf) -> Self {
        Self {
            file: Some(file),
            pending: None,
            path,
            write_back: WriteBack::new(WRITE_BACK_EVERY),
        }
    }

    /// The file back from the write in flight, if any.
    async fn take_file(&mut self) -> Result<std::fs::File, Error> {
        if let Some(handle) = self.pending.take() {
            let file = handle
                .await
                .map_err(|e| Error::restore(&self.path, e.to_string()))?
                .map_err(|e| Error::restore_io(&self.path, e))?;
            return Ok(file);
        }
        self.file
            .take()
            .ok_or_else(|| Error::restore(&self.path, "internal: the file was lost"))
    }

    async fn write(&mut self, batch: Vec<bytes::Bytes>) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut file = self.take_file().await?;
        let len: u64 = batch.iter().map(|b| b.len() as u64).sum();
        // Once WRITE_BACK_EVERY bytes or more are written since the last start, their
        // write-back is started after this batch.
        let start = self.write_back.count(len);
        if len <= INLINE_WRITE_MAX && start.is_none() {
            // A small write into the page cache takes microseconds: done here, it saves
            // the two thread switches a trip to the blocking pool costs (most of a small
            // file's restore time otherwise).
            use std::io::Write;
            for b in &batch {
                file.write_all(b)
                    .map_err(|e| Error::restore_io(&self.path, e))?;
            }
            self.file = Some(file);
            return Ok(());
        }
        self.pending = Some(tokio::task::spawn_blocking(move || {
            use std::io::Write;
            for b in &batch {
                file.write_all(b)?;
            }
            if let Some((offset, len)) = start {
                start_write_back(&file, offset, len);
            }
            Ok(file)
        }));
        Ok(())
    }

    /// The file, once every write is done, and the bytes written to it.
    async fn finish(mut self) -> Result<(std::fs::File, u64), Error> {
        Ok((self.take_file().await?, self.write_back.written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_back_starts_cover_every_byte_once_in_order() {
        let mut wb = WriteBack::new(1000);
        let mut starts = Vec::new();
        for len in [10, 500, 489, 1, 0, 1000, 2500, 3, 999] {
            starts.extend(wb.count(len));
        }
        // Contiguous from 0, each at least `every` long, none before `every` bytes.
        assert_eq!(
            starts,
            vec![(0, 1000), (1000, 1000), (2000, 2500), (4500, 1002)]
        );
        assert_eq!(wb.written, 5502);
        assert_eq!(wb.since, 0);
        assert_eq!(wb.count(7), None);
    }

    #[tokio::test]
    async fn batches_across_write_back_starts_land_byte_for_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("restored");
        let file = std::fs::File::create(&path).expect("create");
        let mut writer = BatchWriter::new(file, path.clone());
        writer.write_back = WriteBack::new(1 << 20);
        let mut expected = Vec::new();
        for i in 0..30usize {
            // Small batches are written inline, large ones on the blocking pool; every few
            // batches a write-back start follows the write.
            let len = if i % 3 == 0 { 1000 } else { 300 << 10 };
            let block: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
            expected.extend_from_slice(&block);
            expected.extend_from_slice(&block[..len / 2]);
            let half = bytes::Bytes::copy_from_slice(&block[..len / 2]);
            writer
                .write(vec![bytes::Bytes::from(block), half])
                .await
                .expect("write");
        }
        assert!(writer.write_back.written > 5 << 20);
        let (file, written) = writer.finish().await.expect("finish");
        drop(file);
        assert_eq!(written, expected.len() as u64);
        assert_eq!(std::fs::read(&path).expect("read"), expected);
    }
}
