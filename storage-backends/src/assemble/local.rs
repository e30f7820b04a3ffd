//! The local directory's copy: the kernel copies the ranges file to file.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use chain_core::{Part, PartLimits};
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use super::{AssemblyJob, ServerCopy};
use crate::Error;

/// Copies with `std::io::copy` between files, which is `copy_file_range(2)` on Linux: the
/// bytes do not pass through user space, and XFS / btrfs share the blocks (reflink) where
/// the ranges are aligned to the file system's block size. The object is written to a
/// staging file `<key>#<n>` (the name the local store and `catena gc` know) and linked into
/// place create-only.
#[derive(Debug)]
pub(crate) struct LocalCopy {
    fs: LocalFileSystem,
}

impl LocalCopy {
    /// A copy for the local store rooted at `root` (the repository's directory, prefix
    /// included).
    pub(crate) fn new(root: &std::path::Path) -> Result<Self, Error> {
        let fs = LocalFileSystem::new_with_prefix(root).map_err(|e| {
            Error::config(format!("local backup directory {}: {e}", root.display()))
        })?;
        Ok(Self { fs })
    }

    fn file(&self, key: &Path) -> Result<PathBuf, Error> {
        self.fs
            .path_to_filesystem(key)
            .map_err(|e| Error::store("locating", key, e))
    }
}

#[async_trait::async_trait]
impl ServerCopy for LocalCopy {
    fn method(&self) -> &'static str {
        "local kernel copy (copy_file_range)"
    }

    fn limits(&self) -> PartLimits {
        PartLimits::NONE
    }

    async fn assemble(&self, job: &AssemblyJob<'_>) -> Result<(), Error> {
        let dest = self.file(job.dest)?;
        let mut pieces = Vec::new();
        for part in &job.plan.parts {
            match part {
                Part::Copy { source, range } => {
                    pieces.push((self.file(job.source(*source)?)?, range.clone()));
                }
                Part::Send { ranges } => {
                    for (source, range) in ranges {
                        pieces.push((self.file(job.source(*source)?)?, range.clone()));
                    }
                }
            }
        }
        let staging = dest.with_file_name(format!(
            "{}#{}",
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            rand::random::<u32>()
        ));
        let cancel = job.cancel.clone();
        let key = job.dest.to_string();
        let result = tokio::task::spawn_blocking(move || {
            let written = copy_pieces(&staging, &pieces, &cancel).and_then(|()| {
                // Create-only: a link fails where the name exists.
                std::fs::hard_link(&staging, &dest)
            });
            let _ = std::fs::remove_file(&staging);
            written
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted && job.cancel.is_cancelled() => {
                Err(Error::Cancelled)
            }
            Err(e) => Err(Error::Store {
                operation: "assembling",
                key,
                source: object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: Box::new(e),
                },
            }),
        }
    }
}

/// Writes the pieces to `staging` in order and syncs it; stops between pieces when
/// cancelled.
fn copy_pieces(
    staging: &std::path::Path,
    pieces: &[(PathBuf, std::ops::Range<u64>)],
    cancel: &tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    if let Some(dir) = staging.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(staging)?;
    for (file, range) in pieces {
        if cancel.is_cancelled() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                "cancelled",
            ));
        }
        let mut src = std::fs::File::open(file)?;
        src.seek(SeekFrom::Start(range.start))?;
        let want = range.end - range.start;
        let copied = std::io::copy(&mut src.take(want), &mut out)?;
        if copied != want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{} holds {copied} of the {want} bytes from offset {}: it is shorter than its index says",
                    file.display(),
                    range.start
                ),
            ));
        }
    }
    out.flush()?;
    out.sync_all()
}
