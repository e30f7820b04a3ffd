//! `catena gc`.

use catena::*;
use clap::Args;

use crate::ctx::{Ctx, Outcome, db_names, print_json, repository};
use crate::output::Format;
use crate::parse::parse_duration;
use crate::storage::StorageFlags;

/// What a signal that stops this command leaves behind, true at any moment.
pub(crate) const INTERRUPTED: &str = "gc stopped; pieces removed before the signal are gone, nothing committed was touched; the lock was released";

#[derive(Args, Debug)]
pub(crate) struct GcArgs {
    /// Databases (default all).
    pub(crate) databases: Vec<String>,
    #[arg(long)]
    pub(crate) from_path: String,
    /// Only remove pieces older than this (default 24h), so that no upload in progress is
    /// touched.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub(crate) grace: std::time::Duration,
    /// Show what would be removed.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) storage: StorageFlags,
}

/// `catena gc`.
pub(crate) async fn run(args: GcArgs, ctx: &Ctx) -> Outcome {
    let (format, reporter) = (ctx.format, &ctx.reporter);
    let _ = reporter;
    let repo = repository(
        crate::storage::config(&args.storage, Some(&args.from_path), None)?,
        ctx,
    )
    .await?;
    let mut dbs = db_names(&args.databases)?;
    if dbs.is_empty() {
        dbs = repo.databases().await.map_err(|e| e.to_string())?;
    }
    let options = GcOptions {
        grace: args.grace,
        dry_run: args.dry_run,
        cancel: ctx.cancel.clone(),
    };
    let mut reports = Vec::new();
    for db in dbs {
        reports.push(
            gc(&repo, &db, &options, &ctx.reporter)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    if format == Format::Json {
        print_json(&reports);
    } else {
        for r in &reports {
            println!(
                "{}: {} pieces ({} bytes) {}removed, {} younger than the grace period left",
                r.database,
                r.removed.len(),
                r.bytes_removed,
                if r.dry_run { "would be " } else { "" },
                r.too_young.len()
            );
            for k in &r.removed {
                println!("  - {k}");
            }
        }
    }
    Ok(true)
}
