//! Listings longer than what a backup holds at once: read while the source goes on, and
//! never committed unless the source finished listing.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use catena::chain_core::*;
use catena::*;

use crate::common::data;
use crate::engine_cases::{Recorder, Stream, committed, keys, local_repo, restore_to};
use crate::*;

/// More entries than a backup takes before it begins its data object (4,096), and more
/// than a directory source reads at once (1,024) in one directory.
const MANY: usize = 4_500;

/// A tree of `MANY` small files in one directory, a file with two names, a link and a
/// nested directory.
fn many_files(src: &Path) {
    std::fs::create_dir_all(src.join("many")).expect("mkdir");
    std::fs::create_dir_all(src.join("nested/deeper")).expect("mkdir");
    for i in 0..MANY {
        std::fs::write(src.join(format!("many/f{i:05}")), format!("file {i}\n")).expect("write");
    }
    std::fs::write(src.join("nested/deeper/store.db"), data(300_000, 7, true)).expect("write");
    std::fs::hard_link(src.join("nested/deeper/store.db"), src.join("again.db")).expect("link");
    std::os::unix::fs::symlink("nested/deeper", src.join("shortcut")).expect("symlink");
}

/// A directory source whose listing, after it has sent every entry, waits until a file has
/// been opened (a deadlock guard of 60 s ends the wait with an error): it passes only if
/// the backup reads files while the source is still listing.
#[derive(Debug)]
struct WaitingSource {
    inner: DirectorySource,
    opened: AtomicBool,
    opening: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl BackupSource for WaitingSource {
    fn capability(&self) -> SourceCapability {
        self.inner.capability()
    }
    async fn list(&self) -> Result<SourceListing, catena::Error> {
        self.inner.list().await
    }
    async fn list_streamed(&self, out: &EntrySender) -> Result<SourceListing, catena::Error> {
        let listing = self.inner.list_streamed(out).await?;
        let read = async {
            while !self.opened.load(Ordering::SeqCst) {
                self.opening.notified().await;
            }
        };
        match tokio::time::timeout(std::time::Duration::from_secs(60), read).await {
            Ok(()) => Ok(listing),
            Err(_) => Err(catena::Error::source(
                self.inner.root(),
                "nothing was read while the source was listing",
            )),
        }
    }
    async fn open(&self, path: &EntryPath) -> Result<Stream, catena::Error> {
        self.opened.store(true, Ordering::SeqCst);
        self.opening.notify_waiters();
        self.inner.open(path).await
    }
    async fn stat(&self, path: &EntryPath) -> Result<Option<SourceEntry>, catena::Error> {
        self.inner.stat(path).await
    }
}

/// A backup of more entries than it holds at once reads files while the source is still
/// listing, and what it commits restores identically: every file, the file with two names
/// as one inode, the link; then a DIFF after changes spread over the listing reads only
/// the changed files and restores identically too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_listing_is_read_while_it_goes_on_and_restores_identically() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    many_files(&src);
    let run = |from: &Path, waits: bool, progress: Arc<dyn Progress>| {
        let source: Arc<dyn BackupSource> = if waits {
            Arc::new(WaitingSource {
                inner: DirectorySource::new(from),
                opened: AtomicBool::new(false),
                opening: tokio::sync::Notify::new(),
            })
        } else {
            Arc::new(DirectorySource::new(from))
        };
        let repo = &repo;
        async move {
            let report = backup(
                repo,
                vec![(db("many"), source)],
                &options(BackupRequest::default()),
                &progress,
            )
            .await
            .expect("the run record is written");
            committed(&report);
            report.run.databases[0].clone()
        }
    };
    let recorder = Arc::new(Recorder::default());
    let full = run(&src, true, recorder.clone()).await;
    let total: u64 = (0..MANY)
        .map(|i| format!("file {i}\n").len() as u64)
        .sum::<u64>()
        + 300_000;
    assert_eq!(
        full.bytes_read, total,
        "each file read once, the linked one once"
    );
    // The listing is longer than what the backup takes before it starts: the total comes
    // once, when the listing ends.
    let events = recorder.0.lock().expect("lock").clone();
    let totals: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ProgressEvent::DatabaseStarted { total_bytes, .. } => Some(*total_bytes),
            ProgressEvent::TotalKnown { total_bytes, .. } => Some(Some(*total_bytes)),
            _ => None,
        })
        .collect();
    assert_eq!(totals, [None, Some(total)], "{events:?}");
    let into = work.path().join("full");
    restore_to(&repo, "many", RestoreTarget::Latest, &into).await;
    assert_same("full", &snapshot(&src), &snapshot(&into));
    let linked = std::fs::metadata(into.join("again.db")).expect("stat");
    assert_eq!(linked.nlink(), 2, "one inode, two names");

    std::fs::write(src.join("many/f00007"), "changed, longer than before\n").expect("write");
    std::fs::write(src.join("many/f04321"), "changed too, and longer\n").expect("write");
    std::fs::remove_file(src.join("many/f02000")).expect("remove");
    std::fs::write(src.join("many/new"), "new\n").expect("write");
    // Small files are read in batches: the 3 to read wait for the listing's end.
    let diff = run(&src, false, progress()).await;
    assert_eq!(
        diff.bytes_read,
        ("changed, longer than before\n".len() + "changed too, and longer\n".len() + 4) as u64,
        "only what changed is read"
    );
    let into = work.path().join("diff");
    restore_to(&repo, "many", RestoreTarget::Latest, &into).await;
    assert_same("diff", &snapshot(&src), &snapshot(&into));
}

/// A directory source whose listing sends its first `sent` entries and then fails, or
/// stalls (never ends, as a hung network file system could), first cancelling
/// `cancel_at_stall` if given (an operator's SIGTERM); reading `broken` fails.
#[derive(Debug)]
struct ScriptedListing {
    inner: DirectorySource,
    sent: usize,
    stall: bool,
    broken: Option<&'static str>,
    cancel_at_stall: Option<storage_backends::CancellationToken>,
}

#[async_trait::async_trait]
impl BackupSource for ScriptedListing {
    fn capability(&self) -> SourceCapability {
        self.inner.capability()
    }
    async fn list(&self) -> Result<SourceListing, catena::Error> {
        self.inner.list().await
    }
    async fn list_streamed(&self, out: &EntrySender) -> Result<SourceListing, catena::Error> {
        let listing = self.inner.list().await?;
        for entry in listing.entries.into_iter().take(self.sent) {
            out.send(entry).await?;
        }
        if self.stall {
            if let Some(cancel) = &self.cancel_at_stall {
                cancel.cancel();
            }
            std::future::pending::<()>().await;
        }
        Err(catena::Error::source(
            self.inner.root(),
            "the disk went away while listing",
        ))
    }
    async fn open(&self, path: &EntryPath) -> Result<Stream, catena::Error> {
        use futures::StreamExt;
        if Some(path.as_str()) == self.broken {
            return Ok(futures::stream::once(async {
                Err(std::io::Error::other("disk read error"))
            })
            .boxed());
        }
        self.inner.open(path).await
    }
    async fn stat(&self, path: &EntryPath) -> Result<Option<SourceEntry>, catena::Error> {
        self.inner.stat(path).await
    }
}

/// Runs a backup of `source` as `name` with `options`, failing the test if it has not
/// ended in 120 s (a guard against a hang, not a measure of speed), and returns the
/// database's error.
async fn failed_backup(
    repo: &Repository,
    name: &str,
    source: ScriptedListing,
    options: &BackupOptions,
) -> String {
    let source: Arc<dyn BackupSource> = Arc::new(source);
    let progress = progress();
    let run = backup(repo, vec![(db(name), source)], options, &progress);
    let report = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the backup ends")
        .expect("the run record is written");
    assert!(!report.succeeded(), "{:?}", report.run.databases);
    report.run.databases[0].error.clone().unwrap_or_default()
}

/// The objects under a database's prefix.
async fn objects_of(repo: &Repository, name: &str) -> Vec<String> {
    let prefix = format!("{name}/");
    keys(repo)
        .await
        .into_iter()
        .filter(|k| k.starts_with(&prefix))
        .collect()
}

/// A listing that fails, before the backup has begun its data object or after it has
/// read thousands of the files listed, fails the database with the source's error, and
/// nothing is committed or left in the bucket: a partial listing is never taken for the
/// whole tree (which a DIFF would record as every other file removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_fails_part_way_commits_nothing() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    many_files(&src);
    assert!(
        backup_dir(&repo, "broken", &src, BackupRequest::default())
            .await
            .succeeded()
    );
    let before = objects_of(&repo, "broken").await;
    std::fs::write(src.join("many/f00001"), "changed\n").expect("write");
    for sent in [10, MANY - 100] {
        let source = ScriptedListing {
            inner: DirectorySource::new(&src),
            sent,
            stall: false,
            broken: None,
            cancel_at_stall: None,
        };
        let error =
            failed_backup(&repo, "broken", source, &options(BackupRequest::default())).await;
        assert!(error.contains("the disk went away"), "{sent}: {error}");
        assert_eq!(
            objects_of(&repo, "broken").await,
            before,
            "{sent}: nothing stays"
        );
    }
}

/// A file that fails while read, while the source is still listing (stalled), fails the
/// database with the read's error at once (the listing is stopped, not waited for), and
/// nothing stays in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_failure_while_the_source_is_listing_stops_both() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    many_files(&src);
    let source = ScriptedListing {
        inner: DirectorySource::new(&src),
        sent: usize::MAX,
        stall: true,
        broken: Some("many/f00100"),
        cancel_at_stall: None,
    };
    let error = failed_backup(&repo, "stops", source, &options(BackupRequest::default())).await;
    assert!(error.contains("disk read error"), "{error}");
    assert_eq!(objects_of(&repo, "stops").await, Vec::<String>::new());
}

/// A cancellation (SIGTERM) that comes while the backup waits for the source's next entry,
/// before and after the data object began, ends the backup as cancelled at once, the
/// stalled listing dropped, and nothing stays in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_the_source_is_listing_ends_the_backup() {
    let work = tempfile::tempdir().expect("tempdir");
    let repo = local_repo(&work.path().join("repo")).await;
    let src = work.path().join("src");
    many_files(&src);
    for sent in [10, MANY - 100] {
        let name = format!("cancel{sent}");
        let options = options(BackupRequest::default());
        let source = ScriptedListing {
            inner: DirectorySource::new(&src),
            sent,
            stall: true,
            broken: None,
            cancel_at_stall: Some(options.cancel.clone()),
        };
        let error = failed_backup(&repo, &name, source, &options).await;
        assert!(error.contains("cancelled"), "{sent}: {error}");
        assert_eq!(objects_of(&repo, &name).await, Vec::<String>::new());
    }
}
