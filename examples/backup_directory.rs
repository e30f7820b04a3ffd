//! Back up a directory and restore it with the library alone: the smallest complete use of
//! Catena.
//!
//! ```text
//! cargo run --example backup_directory                       # a sample, a temporary repository
//! cargo run --example backup_directory -- /data/databases/neo4j s3://my-bucket/prod
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use catena::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scratch = tempfile::tempdir()?;
    let source = match args.first() {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = scratch.path().join("neo4j");
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("store.db"), b"nodes and relationships")?;
            dir
        }
    };
    let url = match args.get(1) {
        Some(url) => url.clone(),
        None => format!("file://{}", scratch.path().join("repository").display()),
    };
    let repo = Repository::new(StorageConfig::from_url(&url)?.build().await?);
    let db = chain_core::DatabaseName::new("neo4j")?;
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);

    // AUTO: a FULL the first time, then DIFFs against the newest backup.
    let sources: Vec<(chain_core::DatabaseName, Arc<dyn BackupSource>)> =
        vec![(db.clone(), Arc::new(DirectorySource::new(&source)))];
    let report = backup(&repo, sources, &BackupOptions::default(), &progress).await?;
    let outcome = &report.run.databases[0];
    if let Some(error) = &outcome.error {
        return Err(error.clone().into());
    }
    println!(
        "backed up {} as {} ({})",
        source.display(),
        outcome.artifact.as_deref().unwrap_or("-"),
        outcome
            .decision
            .as_ref()
            .map(|d| d.reason.to_string())
            .unwrap_or_default()
    );

    let into = scratch.path().join("restored");
    let restored = restore(&repo, &db, &RestoreOptions::new(&into), &progress).await?;
    println!(
        "restored {} files, {} bytes; state digest {} verified",
        restored.files, restored.bytes, restored.state_digest
    );
    Ok(())
}
