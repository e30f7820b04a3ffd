//! Backup sources: the [`BackupSource`] trait, and [`DirectorySource`] for a directory tree.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use chain_core::{DatabaseName, EntryPath, FileStamp, Metadata, Owner, SourceCapability};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::Error;

/// What kind of entry a source lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory.
    Directory,
    /// A regular file of this size (at listing time).
    File {
        /// Size in bytes when listed.
        size: u64,
    },
    /// A symbolic link, stored as a link.
    Symlink {
        /// Its target.
        target: String,
    },
    /// Another name of a regular file the listing also holds (a hard link): not read,
    /// restored as a hard link to `target`.
    HardLink {
        /// The listed file entry this name links to.
        target: EntryPath,
    },
}

/// One entry of a source's listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    /// Path inside the database.
    pub path: EntryPath,
    /// What it is.
    pub kind: SourceKind,
    /// Metadata to restore.
    pub meta: Metadata,
    /// For a regular file, its device, inode and ctime, when the source has them: a DIFF
    /// trusts the parent's blocks for a file whose size, mtime and stamp are all unchanged.
    /// `None` makes the file be read every time.
    pub stamp: Option<FileStamp>,
}

/// A source's listing: its entries, and what it passed over (with why).
#[derive(Clone, Debug, Default)]
pub struct SourceListing {
    /// The entries, in any order.
    pub entries: Vec<SourceEntry>,
    /// Entries not backed up (sockets, devices, FIFOs), with the reason.
    pub skipped: Vec<String>,
    /// Entries that could not be backed up although they hold data (a file name that is
    /// not UTF-8), each with its path and why: the rest is committed, and the database's
    /// backup is reported failed, naming them.
    pub refused: Vec<String>,
    /// The metadata of the database's root directory, when the source has one to restore.
    pub root: Option<Metadata>,
}

/// Where a streamed listing sends its entries ([`BackupSource::list_streamed`]): a bounded
/// channel to the backup, which reads the files listed so far while the source goes on.
#[derive(Debug)]
pub struct EntrySender {
    sender: tokio::sync::mpsc::Sender<SourceEntry>,
    file_bytes: Arc<AtomicU64>,
}

impl EntrySender {
    /// A sender, and the receiver of what it sends, holding at most `ahead` entries (at
    /// least one) not yet received.
    pub fn channel(ahead: usize) -> (Self, tokio::sync::mpsc::Receiver<SourceEntry>) {
        let (sender, receiver) = tokio::sync::mpsc::channel(ahead.max(1));
        let file_bytes = Arc::new(AtomicU64::new(0));
        (Self { sender, file_bytes }, receiver)
    }

    /// Sends one entry, waiting while the receiver is `ahead` entries behind. Fails with
    /// [`Error::Cancelled`] once the receiver is gone (the backup failed or was cancelled):
    /// the listing should then stop and return that error.
    pub async fn send(&self, entry: SourceEntry) -> Result<(), Error> {
        if let SourceKind::File { size } = entry.kind {
            self.file_bytes.fetch_add(size, Ordering::Relaxed);
        }
        self.sender.send(entry).await.map_err(|_| Error::Cancelled)
    }

    /// The sizes of the regular files sent so far, added up (shared: it goes on counting).
    pub(crate) fn file_bytes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.file_bytes)
    }
}

/// Entries a directory source reads in one trip to the blocking pool.
const LIST_CHUNK: usize = 1024;

/// A file's (device, inode).
type Inode = (u64, u64);

/// Up to [`LIST_CHUNK`] entries of a directory, each with its path on disk and, for a
/// regular file with more than one name, its (device, inode).
#[derive(Default)]
struct Chunk {
    found: Vec<(SourceEntry, PathBuf, Option<Inode>)>,
    refused: Vec<String>,
    skipped: Vec<String>,
    /// The directory has no more entries.
    done: bool,
}

/// Which metadata a source records besides contents (the seed's `includeMetadata`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetadataLevel {
    /// Permission bits and modification times.
    #[default]
    Basic,
    /// Also numeric owner and group.
    Ownership,
}

/// Where a database's data comes from. Implement it to back up something other than a
/// directory; the engine needs nothing else.
#[async_trait]
pub trait BackupSource: Send + Sync + Debug {
    /// Positions and diff support (see [`SourceCapability`]).
    fn capability(&self) -> SourceCapability;

    /// Free-form facts recorded in the manifest (`source` field).
    fn describe(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Lists every entry.
    async fn list(&self) -> Result<SourceListing, Error>;

    /// Lists every entry as [`list`](Self::list) does, sending each to `out` as it is found
    /// instead of returning them: the backup reads the files listed so far while the
    /// source goes on, and never holds the whole listing (a listing of a million files is
    /// ~170 MB). Returns the rest of the listing (what was skipped or refused, the root's
    /// metadata), its `entries` empty. When a send fails (the backup stopped), return its
    /// error. The default sends what `list` returns; [`DirectorySource`] streams.
    async fn list_streamed(&self, out: &EntrySender) -> Result<SourceListing, Error> {
        let mut listing = self.list().await?;
        for entry in std::mem::take(&mut listing.entries) {
            out.send(entry).await?;
        }
        Ok(listing)
    }

    /// Streams a file's content.
    async fn open(
        &self,
        path: &EntryPath,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, Error>;

    /// The entry at `path` as it is now (`None` when it is gone): used after reading a file
    /// to tell whether it changed while it was read.
    async fn stat(&self, path: &EntryPath) -> Result<Option<SourceEntry>, Error>;
}

/// A directory tree: regular files, directories and symbolic links (stored as links), with
/// permission bits and modification times; sockets, devices and FIFOs are skipped with a
/// warning. A file name that is not UTF-8 is refused alone: named, left out, and the
/// database's backup reported failed, the rest committed.
#[derive(Clone, Debug)]
pub struct DirectorySource {
    root: PathBuf,
    level: MetadataLevel,
}

impl DirectorySource {
    /// The tree under `root` (one database).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            level: MetadataLevel::Basic,
        }
    }

    /// Records more metadata.
    pub fn with_metadata(mut self, level: MetadataLevel) -> Self {
        self.level = level;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// One source per subdirectory of `root` whose name is a database name (Neo4j's
    /// `data/databases/<name>` layout), sorted by name. What is passed over is logged; use
    /// [`DirectorySource::scan`] to report it.
    pub fn databases(root: &Path) -> Result<Vec<(DatabaseName, DirectorySource)>, Error> {
        let scan = Self::scan(root)?;
        for s in &scan.skipped {
            tracing::warn!(name = %s.name, why = %s.why, "not backed up");
        }
        Ok(scan.databases)
    }

    /// Like [`DirectorySource::databases`], and also every entry of `root` that is not
    /// backed up, with why: a directory whose name is not a database name (which fails the
    /// run: its data would be left out), a file or link (noted), a hidden directory or
    /// `lost+found` (noted).
    pub fn scan(root: &Path) -> Result<DatabaseScan, Error> {
        let mut out = DatabaseScan::default();
        let dir = std::fs::read_dir(root).map_err(|e| Error::source_io(root, e))?;
        for entry in dir {
            let entry = entry.map_err(|e| Error::source_io(root, e))?;
            let ft = entry
                .file_type()
                .map_err(|e| Error::source_io(entry.path(), e))?;
            let shown = entry.file_name().to_string_lossy().into_owned();
            let skip = |why: &str, fails_run: bool| SkippedEntry {
                name: shown.clone(),
                why: why.to_owned(),
                fails_run,
            };
            if !ft.is_dir() {
                out.skipped.push(skip(
                    if ft.is_symlink() {
                        "a symbolic link, not a database directory"
                    } else {
                        "not a directory"
                    },
                    false,
                ));
                continue;
            }
            if shown.starts_with('.') || shown == "lost+found" {
                out.skipped.push(skip(
                    "a hidden or file-system directory, not a database",
                    false,
                ));
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                out.skipped.push(skip(
                    "its name is not UTF-8, so it is not a database name; rename it",
                    true,
                ));
                continue;
            };
            match DatabaseName::new(&name) {
                Ok(db) => out.databases.push((db, DirectorySource::new(entry.path()))),
                Err(e) => out.skipped.push(skip(
                    &format!("{e}; rename it, or name the databases to back up"),
                    true,
                )),
            }
        }
        out.databases.sort_by(|a, b| a.0.cmp(&b.0));
        out.skipped.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn entry_for(
        &self,
        rel: &str,
        full: &Path,
        md: &std::fs::Metadata,
    ) -> Result<Option<SourceEntry>, Error> {
        let path =
            EntryPath::new(rel).map_err(|e| Error::source(full.to_owned(), e.to_string()))?;
        let meta = self.meta_of(md);
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            SourceKind::Directory
        } else if ft.is_file() {
            SourceKind::File { size: md.len() }
        } else if ft.is_symlink() {
            let target = std::fs::read_link(full).map_err(|e| Error::source_io(full, e))?;
            let target = target.to_str().ok_or_else(|| {
                Error::source(full.to_owned(), "the symbolic link's target is not UTF-8")
            })?;
            SourceKind::Symlink {
                target: target.to_owned(),
            }
        } else {
            return Ok(None);
        };
        let stamp = matches!(kind, SourceKind::File { .. }).then(|| FileStamp {
            dev: md.dev(),
            ino: md.ino(),
            ctime_ns: md
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(md.ctime_nsec()),
        });
        Ok(Some(SourceEntry {
            path,
            kind,
            meta,
            stamp,
        }))
    }

    fn meta_of(&self, md: &std::fs::Metadata) -> Metadata {
        let mtime_ns = md
            .modified()
            .ok()
            .and_then(|t| match t.duration_since(UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_nanos()).ok(),
                Err(e) => i64::try_from(e.duration().as_nanos()).ok().map(|n| -n),
            })
            .unwrap_or(0);
        Metadata {
            mode: md.permissions().mode() & 0o7777,
            mtime_ns,
            owner: (self.level == MetadataLevel::Ownership).then(|| Owner {
                uid: md.uid(),
                gid: md.gid(),
            }),
            xattrs: BTreeMap::new(),
        }
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&DirectorySource) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| Error::source(self.root.clone(), format!("listing task failed: {e}")))?
    }

    /// Reads up to [`LIST_CHUNK`] more entries of the directory `dir` (`rel` inside the
    /// database) from `read`.
    fn read_chunk(
        &self,
        dir: &Path,
        rel: &str,
        read: &mut std::fs::ReadDir,
    ) -> Result<Chunk, Error> {
        let mut chunk = Chunk::default();
        for item in read.by_ref() {
            let item = item.map_err(|e| Error::source_io(dir, e))?;
            let full = item.path();
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                // Entry paths are UTF-8 (docs/DESIGN.md): this one entry is refused,
                // named, and the rest backed up.
                chunk.refused.push(format!(
                    "{}: the name is not UTF-8, so it was not backed up; rename it",
                    full.display()
                ));
                continue;
            };
            let child_rel = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            let md = std::fs::symlink_metadata(&full).map_err(|e| Error::source_io(&full, e))?;
            match self.entry_for(&child_rel, &full, &md)? {
                Some(entry) => {
                    let inode = (md.is_file() && md.nlink() > 1).then(|| (md.dev(), md.ino()));
                    chunk.found.push((entry, full, inode));
                }
                None => {
                    tracing::warn!(path = %full.display(), "skipped: not a regular file, directory or symbolic link");
                    chunk.skipped.push(format!(
                        "{}: not a regular file, directory or symbolic link",
                        full.display()
                    ));
                }
            }
            if chunk.found.len() >= LIST_CHUNK {
                return Ok(chunk);
            }
        }
        chunk.done = true;
        Ok(chunk)
    }

    fn full_path(&self, path: &EntryPath) -> PathBuf {
        let mut p = self.root.clone();
        for c in path.components() {
            p.push(c);
        }
        p
    }
}

#[async_trait]
impl BackupSource for DirectorySource {
    fn capability(&self) -> SourceCapability {
        SourceCapability::DIRECTORY
    }

    fn describe(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("source".into(), "directory".into());
        m.insert("path".into(), self.root.display().to_string());
        m
    }

    async fn list(&self) -> Result<SourceListing, Error> {
        let (sender, mut received) = EntrySender::channel(LIST_CHUNK);
        let listing = async move { self.list_streamed(&sender).await };
        let collect = async {
            let mut entries = Vec::new();
            while let Some(e) = received.recv().await {
                entries.push(e);
            }
            entries
        };
        let (listing, entries) = futures::join!(listing, collect);
        Ok(SourceListing {
            entries,
            ..listing?
        })
    }

    /// Walks the tree depth first, a directory's entries read 1,024 at a time on
    /// the blocking pool and sent as they are read. Regular files with more than one name
    /// are sent last: of a file's names inside the database, the first in byte order is
    /// sent as the file, the others as hard links to it (read once, restored as one inode).
    async fn list_streamed(&self, out: &EntrySender) -> Result<SourceListing, Error> {
        let mut listing = SourceListing::default();
        let root_md = self
            .blocking(|me| std::fs::metadata(&me.root).map_err(|e| Error::source_io(&me.root, e)))
            .await?;
        if !root_md.is_dir() {
            return Err(Error::source(self.root.clone(), "not a directory"));
        }
        listing.root = Some(self.meta_of(&root_md));
        // Regular files with more than one name, by (device, inode).
        let mut linked: HashMap<Inode, Vec<SourceEntry>> = HashMap::new();
        let mut stack: Vec<(PathBuf, String)> = vec![(self.root.clone(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let at = dir.clone();
            let mut read = Some(
                self.blocking(move |_| {
                    std::fs::read_dir(&at).map_err(|e| Error::source_io(&at, e))
                })
                .await?,
            );
            while let Some(mut r) = read.take() {
                let (at, under) = (dir.clone(), rel.clone());
                let (r, chunk) = self
                    .blocking(move |me| {
                        let chunk = me.read_chunk(&at, &under, &mut r)?;
                        Ok((r, chunk))
                    })
                    .await?;
                listing.refused.extend(chunk.refused);
                listing.skipped.extend(chunk.skipped);
                for (entry, full, inode) in chunk.found {
                    if entry.kind == SourceKind::Directory {
                        stack.push((full, entry.path.as_str().to_owned()));
                    }
                    match inode {
                        Some(inode) => linked.entry(inode).or_default().push(entry),
                        None => out.send(entry).await?,
                    }
                }
                if !chunk.done {
                    read = Some(r);
                }
            }
        }
        let mut groups: Vec<Vec<SourceEntry>> = linked.into_values().collect();
        for group in &mut groups {
            group.sort_by(|a, b| a.path.cmp(&b.path));
        }
        groups.sort_by(|a, b| a[0].path.cmp(&b[0].path));
        for group in groups {
            let target = group[0].path.clone();
            for (i, mut entry) in group.into_iter().enumerate() {
                if i > 0 {
                    entry.kind = SourceKind::HardLink {
                        target: target.clone(),
                    };
                    entry.stamp = None;
                }
                out.send(entry).await?;
            }
        }
        Ok(listing)
    }

    async fn open(
        &self,
        path: &EntryPath,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, Error> {
        // A small file is opened, measured and read in one trip to the blocking pool, into
        // a buffer of its size: per file, one hop instead of four, and no 1 MiB read
        // buffer to fault in for 8 KiB of data. Larger files are streamed.
        let full = self.full_path(path);
        let at = full.clone();
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<Opened> {
            use std::io::Read;
            let mut file = std::fs::File::open(&at)?;
            let len = file.metadata()?.len();
            if len > WHOLE_READ_MAX {
                return Ok(Opened::Stream(file));
            }
            let mut buf = Vec::with_capacity(len as usize);
            file.read_to_end(&mut buf)?;
            Ok(Opened::Whole(Bytes::from(buf)))
        })
        .await
        .map_err(|e| Error::source(full.clone(), format!("reading task failed: {e}")))?
        .map_err(|e| Error::source_io(&full, e))?;
        Ok(match opened {
            Opened::Whole(bytes) if bytes.is_empty() => futures::stream::empty().boxed(),
            Opened::Whole(bytes) => futures::stream::once(async move { Ok(bytes) }).boxed(),
            Opened::Stream(file) => read_in_chunks(file),
        })
    }

    async fn stat(&self, path: &EntryPath) -> Result<Option<SourceEntry>, Error> {
        let full = self.full_path(path);
        // One lstat of a file just read (its inode is cached): cheaper done here than the
        // two thread switches of a trip to the blocking pool, once per file.
        match std::fs::symlink_metadata(&full) {
            Ok(md) => self.entry_for(path.as_str(), &full, &md),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::source_io(&full, e)),
        }
    }
}

/// Files up to this size are read whole in one blocking call (see `DirectorySource::open`).
const WHOLE_READ_MAX: u64 = 1 << 20;

/// Bytes a larger file is read in: the default block size, so that each chunk is one block
/// (cut without a copy).
const READ_CHUNK: usize = 1 << 20;

/// `file`'s bytes in chunks of [`READ_CHUNK`] (the last shorter), each read by one call on
/// the blocking pool straight into the buffer it is handed out in. A tokio file read each
/// chunk into its own buffer first, then copied it out: a second buffer per file and a
/// second copy of every byte.
fn read_in_chunks(file: std::fs::File) -> BoxStream<'static, std::io::Result<Bytes>> {
    futures::stream::try_unfold(Some(file), |file| async move {
        let Some(mut file) = file else {
            return Ok(None);
        };
        let (file, chunk) = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut chunk = Vec::with_capacity(READ_CHUNK);
            (&mut file)
                .take(READ_CHUNK as u64)
                .read_to_end(&mut chunk)
                .map(|_| (file, chunk))
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(match chunk.len() {
            0 => None,
            n if n < READ_CHUNK => Some((Bytes::from(chunk), None)),
            _ => Some((Bytes::from(chunk), Some(file))),
        })
    })
    .boxed()
}

/// A file opened for reading: read whole already, or to be streamed.
enum Opened {
    Whole(Bytes),
    Stream(std::fs::File),
}

/// What [`DirectorySource::scan`] found under a root of databases.
#[derive(Debug, Default)]
pub struct DatabaseScan {
    /// One source per database directory, sorted by name.
    pub databases: Vec<(DatabaseName, DirectorySource)>,
    /// Entries that are not backed up, with why.
    pub skipped: Vec<SkippedEntry>,
}

/// An entry of a root of databases that is not backed up.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkippedEntry {
    /// Its name (lossy where it is not UTF-8).
    pub name: String,
    /// Why it is not backed up, and what to do.
    pub why: String,
    /// Whether leaving it out fails the run (a directory that may hold a database).
    pub fails_run: bool,
}
