//! `catena inspect`.

use catena::*;
use clap::Args;

use crate::ctx::{Ctx, Outcome, db_names, print_json, repository};
use crate::output::Format;
use crate::storage::StorageFlags;

#[derive(Args, Debug)]
pub(crate) struct InspectArgs {
    /// Databases (default all).
    pub(crate) databases: Vec<String>,
    #[arg(long)]
    pub(crate) from_path: String,
    /// Only the newest backup of each database.
    #[arg(long, conflicts_with = "latest_chain")]
    pub(crate) latest_backup: bool,
    /// Only the chain of the newest restore point.
    #[arg(long)]
    pub(crate) latest_chain: bool,
    /// Show EMPTY artifacts too.
    #[arg(long)]
    pub(crate) empty: bool,
    #[command(flatten)]
    pub(crate) storage: StorageFlags,
}

/// `catena inspect`.
pub(crate) async fn run(args: InspectArgs, ctx: &Ctx) -> Outcome {
    let format = ctx.format;
    let repo = repository(
        crate::storage::config(&args.storage, Some(&args.from_path), None)?,
        ctx,
    )
    .await?;
    let scope = if args.latest_backup {
        InspectScope::LatestBackup
    } else if args.latest_chain {
        InspectScope::LatestChain
    } else {
        InspectScope::All
    };
    let options = InspectOptions {
        scope,
        include_empty: args.empty,
        cancel: ctx.cancel.clone(),
    };
    let rows = inspect(&repo, &db_names(&args.databases)?, &options, &ctx.reporter)
        .await
        .map_err(|e| e.to_string())?
        .rows;
    if format == Format::Json {
        print_json(&rows);
    } else {
        println!(
            "{:<50} {:<10} {:<26} {:<5} {:<11} {:>6} {:>6} {:>12} {:>12} REASON",
            "ARTIFACT",
            "DATABASE",
            "COMMITTED (UTC)",
            "FULL",
            "COMPRESSED",
            "LOWEST",
            "HIGHEST",
            "SIZE",
            "STORED",
        );
        for r in &rows {
            println!(
                "{:<50} {:<10} {:<26} {:<5} {:<11} {:>6} {:>6} {:>12} {:>12} {}{}{}",
                r.artifact,
                r.database,
                // Exactly what --restore-until takes back: microseconds, like the
                // manifest's committed_at, so backups of one second are told apart.
                r.committed_at.strftime("%Y-%m-%d %H:%M:%S%.6f").to_string(),
                match r.kind {
                    Some(k) => (k == catena::chain_core::ArtifactKind::Full).to_string(),
                    None => "?".into(),
                },
                r.compression,
                r.from + 1,
                r.to,
                r.logical_bytes,
                r.stored_bytes,
                r.reason,
                if r.empty { " EMPTY" } else { "" },
                r.problem
                    .as_deref()
                    .map(|p| format!(" UNUSABLE: {p}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(rows.iter().all(|r| r.usable))
}
