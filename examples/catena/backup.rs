//! `catena backup`: flags and the values file into one job, the run, its report, and the check after it.

use std::path::PathBuf;
use std::sync::Arc;

use catena::chain_core::{BackupType, DatabaseName};
use catena::*;
use clap::Args;

use crate::aggregate::aggregate_print;
use crate::check::check_databases;
use crate::ctx::{Ctx, Failure, Outcome, db_names, print_json, repository};
use crate::job::job;
use crate::output::Format;
use crate::parse::parse_type;
use crate::storage::StorageFlags;

/// What a signal that stops this command leaves behind, true at any moment.
pub(crate) const INTERRUPTED: &str = "backup stopped; the database in progress was not committed, its upload was aborted and nothing of it is visible; its lock was released";

#[derive(Args, Debug, Clone)]
pub(crate) struct BackupArgs {
    /// Databases (comma lists accepted); default: every subdirectory of --from, or the
    /// values file's backup.database.
    pub(crate) databases: Vec<String>,
    /// The source root: one subdirectory per database.
    #[arg(long)]
    pub(crate) from: Option<PathBuf>,
    /// Where backups go: s3://, gs://, az://, file:// URL or a directory.
    #[arg(long)]
    pub(crate) to_path: Option<String>,
    /// FULL, DIFF or AUTO.
    #[arg(long = "type", value_parser = parse_type)]
    pub(crate) backup_type: Option<BackupType>,
    /// Prefer the newest DIFF as parent.
    #[arg(long)]
    pub(crate) prefer_diff_as_parent: bool,
    /// Take a FULL when a DIFF cannot be taken (default true).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) fallback_to_full: Option<bool>,
    /// Keep a failed run's pieces under _failed/.
    #[arg(long)]
    pub(crate) keep_failed: bool,
    /// Read every file on a DIFF, even those whose size, mtime, inode, device and ctime
    /// show them unchanged since the parent (for sources that rewrite files keeping all of
    /// these; see docs/DESIGN.md).
    #[arg(long)]
    pub(crate) force_read: bool,
    /// Optional local spool directory (accepted; Catena streams and needs none).
    #[arg(long)]
    pub(crate) temp_path: Option<PathBuf>,
    /// Print the decisions and their reasons; upload nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// The Neo4j chart's values file.
    #[arg(long)]
    pub(crate) values: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) storage: StorageFlags,
}

pub(crate) async fn backup_command(args: BackupArgs, ctx: &Ctx) -> Outcome {
    let (format, reporter) = (ctx.format, &ctx.reporter);
    let job = job(&args, ctx)?;
    if job.values.aggregate_only() {
        let a = &job.values.backup.aggregate;
        let storage = job.storage.clone();
        let repo = repository(storage, ctx).await?;
        let options = AggregateOptions {
            keep_old_backup: a.keep_old_backup.unwrap_or(false),
            upload: ctx.upload.clone(),
            cancel: ctx.cancel.clone(),
            ..AggregateOptions::default()
        };
        return aggregate_print(&repo, a.database.as_deref().unwrap_or("*"), &options, ctx).await;
    }
    let Some(from) = &job.from else {
        return Err("give --from: the directory with one subdirectory per database".into());
    };
    let mut sources: Vec<(DatabaseName, Arc<dyn BackupSource>)> = Vec::new();
    let mut options = job.options.clone();
    if job.databases.is_empty() {
        let scan = DirectorySource::scan(from).map_err(|e| e.to_string())?;
        for (db, s) in scan.databases {
            sources.push((db, Arc::new(s.with_metadata(job.metadata))));
        }
        options.skipped = scan.skipped;
    } else {
        for db in &job.databases {
            sources.push((
                db.clone(),
                Arc::new(DirectorySource::new(from.join(db.as_str())).with_metadata(job.metadata)),
            ));
        }
    }
    if sources.is_empty() {
        let skipped: Vec<String> = options
            .skipped
            .iter()
            .map(|s| format!("{} ({})", s.name, s.why))
            .collect();
        return Err(Failure::from(format!(
            "no database directories under {}{}",
            from.display(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; passed over: {}", skipped.join(", "))
            }
        )));
    }
    let repo = crate::ctx::open_repository(job.storage.clone(), ctx, true).await?;
    let report = backup(&repo, sources, &options, reporter).await?;
    let mut ok = report.succeeded();
    if format == Format::Json {
        print_json(&report);
    } else {
        for d in &report.run.databases {
            let decision = d
                .decision
                .as_ref()
                .map(|x| format!("{} {} (reason {})", x.kind, x.positions, x.reason))
                .unwrap_or_default();
            match &d.error {
                None if args.dry_run => println!("{}: would take {decision}", d.database),
                None => println!(
                    "{}: {decision}: {} bytes read{}, {} stored, artifact {}{}",
                    d.database,
                    d.bytes_read,
                    if d.unchanged_bytes > 0 {
                        format!(" ({} unchanged, not read)", d.unchanged_bytes)
                    } else {
                        String::new()
                    },
                    d.stored_bytes,
                    d.artifact.as_deref().unwrap_or("-"),
                    if d.empty { " (EMPTY)" } else { "" }
                ),
                Some(e) => println!("{}: FAILED: {e}", d.database),
            }
            for w in &d.warnings {
                println!("  warning: {w}");
            }
        }
        for s in &report.run.skipped {
            println!(
                "{}: NOT BACKED UP: {}{}",
                s.name,
                s.why,
                if s.fails_run { "" } else { " (noted)" }
            );
        }
        if let Some(k) = &report.run_record_key {
            println!("run record: {k}");
        }
    }
    if ok && !args.dry_run && job.values.check_after() {
        let mut dbs = db_names(job.values.consistency_check.database.as_slice())?;
        if dbs.is_empty() {
            dbs = report
                .run
                .databases
                .iter()
                .filter_map(|d| DatabaseName::new(&d.database).ok())
                .collect();
        }
        let c = &job.values.consistency_check;
        let options = CheckOptions {
            structure: c.check_graph.unwrap_or(true),
            indexes: c.check_indexes.unwrap_or(true),
            objects: c.check_counts.unwrap_or(true),
            blocks: c.check_property_owners.unwrap_or(true),
            ..CheckOptions::default()
        };
        ok &= check_databases(&repo, dbs, &options, ctx).await?;
        if !ok {
            // A check that finds problems finds them again: the repository needs a person.
            return Err(Failure::reported(true));
        }
    }
    if !ok {
        // The failures are printed above; whether a retry can mend them is the report's.
        return Err(Failure::reported(report.failed_permanently()));
    }
    Ok(true)
}
