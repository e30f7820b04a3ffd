//! A [`BackupSource`] that is not a directory: the standard output of a command, such as a
//! database dump (`pg_dump`, `mysqldump`, `neo4j-admin database dump --to-stdout`), backed up
//! as one file `dump` of a database and restored byte for byte.
//!
//! ```text
//! cargo run --example custom_source                                  # a generated dump
//! cargo run --example custom_source -- pg_dump --format=plain mydb   # any command
//! ```
//!
//! The engine asks a source for its listing first (every file with its size), then for each
//! file's bytes, then for the file as it is afterwards, and refuses a file whose size
//! changed while it was read. A command's output has no size until it ends, so this source
//! runs the command once, when listed, into a spool file, and streams the spool from then
//! on. A source that knows its sizes (an object listing, a database's own files) streams
//! directly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;

use bytes::Bytes;
use catena::chain_core::{DatabaseName, EntryPath, Metadata, SourceCapability};
use catena::*;
use futures::StreamExt;
use futures::stream::BoxStream;

/// The standard output of `program args…`, as one file named `dump`.
#[derive(Debug)]
struct CommandSource {
    program: String,
    args: Vec<String>,
    spool: PathBuf,
    /// The entry as listed (after the command ran).
    listed: Mutex<Option<SourceEntry>>,
}

impl CommandSource {
    fn entry_path() -> EntryPath {
        EntryPath::new("dump").expect("a valid entry path")
    }

    fn failed(&self, why: impl std::fmt::Display) -> Error {
        Error::source(&self.spool, format!("`{}`: {why}", self.program))
    }
}

#[async_trait::async_trait]
impl BackupSource for CommandSource {
    fn capability(&self) -> SourceCapability {
        // Catena numbers the backups; any earlier state can be the parent of a DIFF (a
        // dump that changed little stores only its changed blocks).
        SourceCapability::DIRECTORY
    }

    fn describe(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("command".to_owned(), self.program.clone())])
    }

    async fn list(&self) -> Result<SourceListing, Error> {
        // Run the command once, its stdout into the spool.
        let spool = std::fs::File::create(&self.spool).map_err(|e| self.failed(e))?;
        let status = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .stdout(spool)
            .status()
            .await
            .map_err(|e| self.failed(e))?;
        if !status.success() {
            // A failed dump is not a backup: the database's run fails, nothing is committed.
            return Err(self.failed(format!("exited with {status}")));
        }
        let size = std::fs::metadata(&self.spool)
            .map_err(|e| self.failed(e))?
            .len();
        let entry = SourceEntry {
            path: Self::entry_path(),
            kind: SourceKind::File { size },
            meta: Metadata {
                mode: 0o600,
                mtime_ns: jiff::Timestamp::now().as_nanosecond() as i64,
                owner: None,
                xattrs: BTreeMap::new(),
            },
            // No inode to trust: every DIFF reads the dump (and stores changed blocks only).
            stamp: None,
        };
        *self.listed.lock().expect("not poisoned") = Some(entry.clone());
        Ok(SourceListing {
            entries: vec![entry],
            ..SourceListing::default()
        })
    }

    async fn open(
        &self,
        _path: &EntryPath,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, Error> {
        let file = tokio::fs::File::open(&self.spool)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20).boxed())
    }

    async fn stat(&self, _path: &EntryPath) -> Result<Option<SourceEntry>, Error> {
        // The spool does not change once written.
        Ok(self.listed.lock().expect("not poisoned").clone())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        // A stand-in for a database dump: 20,000 lines of SQL.
        args = [
            "sh",
            "-c",
            "for i in $(seq 1 20000); do echo \"INSERT INTO nodes VALUES ($i, 'node $i');\"; done",
        ]
        .map(String::from)
        .to_vec();
    }
    let scratch = tempfile::tempdir()?;
    let source = CommandSource {
        program: args[0].clone(),
        args: args[1..].to_vec(),
        spool: scratch.path().join("dump.spool"),
        listed: Mutex::new(None),
    };
    let repo = Repository::new(
        StorageConfig::from_url(&format!(
            "file://{}",
            scratch.path().join("repository").display()
        ))?
        .build()
        .await?,
    );
    let db = DatabaseName::new("dump")?;
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);

    let sources: Vec<(DatabaseName, Arc<dyn BackupSource>)> = vec![(db.clone(), Arc::new(source))];
    let report = backup(&repo, sources, &BackupOptions::default(), &progress).await?;
    let outcome = &report.run.databases[0];
    if let Some(error) = &outcome.error {
        return Err(error.clone().into());
    }
    println!(
        "backed up the output of `{}`: {} bytes, artifact {}",
        args.join(" "),
        outcome.bytes_read,
        outcome.artifact.as_deref().unwrap_or("-")
    );

    let into = scratch.path().join("restored");
    let restored = restore(&repo, &db, &RestoreOptions::new(&into), &progress).await?;
    let same =
        std::fs::read(into.join("dump"))? == std::fs::read(scratch.path().join("dump.spool"))?;
    println!(
        "restored {} bytes into {}: {}",
        restored.bytes,
        into.join("dump").display(),
        if same {
            "identical to the command's output"
        } else {
            "DIFFERENT"
        }
    );
    if !same {
        return Err("the restored dump differs from the command's output".into());
    }
    Ok(())
}
