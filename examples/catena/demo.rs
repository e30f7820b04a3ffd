//! `catena demo`: with no setup, makes a sample data set of a few hundred MiB (two
//! databases, compressible and incompressible files), backs it up to a local directory store
//! (a FULL, then two DIFFs after changes, with preferDiffAsParent), inspects, checks,
//! aggregates, restores, and verifies the restore byte for byte, printing each step with its
//! figures.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use catena::chain_core::{BackupRequest, DatabaseName};
use catena::*;

const MIB: f64 = 1024.0 * 1024.0;

use crate::sample::{change, files_of, make_data};

fn step(title: &str) {
    println!("\n== {title}");
}

async fn run_backup(
    repo: &Repository,
    data: &Path,
    request: BackupRequest,
) -> Result<bool, Box<dyn std::error::Error>> {
    let sources: Vec<(DatabaseName, Arc<dyn BackupSource>)> = DirectorySource::databases(data)?
        .into_iter()
        .map(|(n, s)| (n, Arc::new(s) as Arc<dyn BackupSource>))
        .collect();
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let start = Instant::now();
    let report = backup(
        repo,
        sources,
        &BackupOptions {
            request,
            ..BackupOptions::default()
        },
        &progress,
    )
    .await?;
    let secs = start.elapsed().as_secs_f64();
    let read: u64 = report.run.databases.iter().map(|d| d.bytes_read).sum();
    for d in &report.run.databases {
        match (&d.decision, &d.error) {
            (Some(dec), None) => println!(
                "  {:<7} {} {:<9} read {:>7.1} MiB  stored {:>7.1} MiB  reason {}{}",
                d.database,
                dec.kind,
                dec.positions.to_string(),
                d.bytes_read as f64 / MIB,
                d.stored_bytes as f64 / MIB,
                dec.reason,
                if d.empty {
                    " (EMPTY: nothing changed)"
                } else {
                    ""
                }
            ),
            (_, Some(e)) => println!("  {:<7} FAILED: {e}", d.database),
            (None, None) => println!("  {:<7} (no decision)", d.database),
        }
    }
    println!(
        "  {:.1} MiB in {secs:.2} s: {:.0} MiB/s; run record {}",
        read as f64 / MIB,
        read as f64 / MIB / secs,
        report.run_record_key.clone().unwrap_or_default()
    );
    Ok(report.succeeded())
}

pub async fn demo(keep: Option<PathBuf>) -> Result<bool, Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let base = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    let data = base.join("data");
    let store_dir = base.join("backups");
    println!("Catena demo in {}", base.display());

    step("1. A sample data set: two databases, compressible and incompressible files");
    make_data(&data)?;
    let total: usize = files_of(&data)?.values().map(Vec::len).sum();
    println!("  {} ({:.1} MiB)", data.display(), total as f64 / MIB);

    let repo = Repository::new(
        StorageConfig::from_url(&format!("file://{}", store_dir.display()))?
            .build()
            .await?,
    );
    let prefer = BackupRequest {
        prefer_diff_as_parent: true,
        ..BackupRequest::default()
    };
    step("2. First backup (type AUTO, preferDiffAsParent): a FULL per database");
    let mut ok = run_backup(&repo, &data, prefer).await?;
    step("3. Change ~5% of neo4j, back up again: DIFFs store only the changed blocks");
    change(&data, 1)?;
    ok &= run_backup(&repo, &data, prefer).await?;
    step("4. Change again, back up: the parent is the newest DIFF (preferDiffAsParent)");
    change(&data, 2)?;
    ok &= run_backup(&repo, &data, prefer).await?;

    step("5. Inspect");
    println!(
        "  {:<7} {:<48} {:<4} {:<9} {:>10} {:>10}  reason",
        "db", "artifact", "kind", "positions", "data MiB", "stored MiB"
    );
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let everything = InspectOptions {
        include_empty: true,
        ..InspectOptions::default()
    };
    for r in inspect(&repo, &[], &everything, &progress).await?.rows {
        println!(
            "  {:<7} {:<48} {:<4} ({}, {}] {:>10.1} {:>10.1}  {}{}",
            r.database,
            r.artifact,
            r.kind.map_or_else(|| "?".to_owned(), |k| k.to_string()),
            r.from,
            r.to,
            r.logical_bytes as f64 / MIB,
            r.stored_bytes as f64 / MIB,
            r.reason,
            if r.empty { " EMPTY" } else { "" }
        );
    }

    step("6. Check every chain: structure, objects' SHA-256, every block, state digests");
    for db in repo.databases().await? {
        let start = Instant::now();
        let report = check(&repo, &db, &CheckOptions::default(), &progress).await?;
        println!(
            "  {:<7} {} artifacts, {} objects and {} blocks verified in {:.2} s: {} (report {})",
            db,
            report.artifacts,
            report.objects_verified,
            report.blocks_verified,
            start.elapsed().as_secs_f64(),
            if report.ok {
                "OK".to_owned()
            } else {
                format!("{} PROBLEMS", report.problems.len())
            },
            report.report_key.as_deref().unwrap_or_default()
        );
        ok &= report.ok;
    }

    step("7. Aggregate neo4j's chain into one FULL (keepOldBackup: false)");
    let start = Instant::now();
    for db in repo.databases_matching("neo*").await? {
        let r = aggregate(&repo, &db, &AggregateOptions::default(), &progress).await?;
        println!(
            "  {:<7} {} artifacts -> {} in {:.2} s; same state digest {}…; deleted {}",
            r.database,
            r.chain.len(),
            r.artifact.unwrap_or_else(|| "(already a FULL)".into()),
            start.elapsed().as_secs_f64(),
            &r.state_digest[..16],
            r.deleted.len()
        );
    }

    step("8. Restore every database and compare with the data, byte for byte");
    let mut files = 0;
    let mut bytes = 0u64;
    for db in repo.databases().await? {
        let into = base.join("restored").join(db.as_str());
        let start = Instant::now();
        let r = restore(&repo, &db, &RestoreOptions::new(&into), &progress).await?;
        let same = files_of(&into)? == files_of(&data.join(db.as_str()))?;
        println!(
            "  {:<7} {} files, {:.1} MiB from a chain of {} in {:.2} s: {}",
            db,
            r.files,
            r.bytes as f64 / MIB,
            r.chain.len(),
            start.elapsed().as_secs_f64(),
            if same { "identical" } else { "DIFFERENT" }
        );
        ok &= same;
        files += r.files;
        bytes += r.bytes;
    }
    if ok {
        println!(
            "\nrestore verified: {files} files, {:.1} MiB byte-identical to the source",
            bytes as f64 / MIB
        );
    } else {
        println!("\nFAILED: see above");
    }
    Ok(ok)
}
