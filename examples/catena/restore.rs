//! `catena restore`.

use std::path::PathBuf;

use catena::chain_core::DatabaseName;
use catena::chain_core::RestoreTarget;
use catena::*;
use clap::Args;

use crate::ctx::{Ctx, Outcome, print_json, repository};
use crate::output::Format;
use crate::parse::parse_until;
use crate::storage::StorageFlags;

/// What a signal that stops this command leaves behind, true at any moment.
pub(crate) const INTERRUPTED: &str =
    "restore stopped; the destination was left as it was and the staging directory removed";

#[derive(Args, Debug)]
pub(crate) struct RestoreArgs {
    /// The database to restore.
    pub(crate) database: String,
    /// Where the backups are.
    #[arg(long)]
    pub(crate) from_path: String,
    /// Destination directory.
    #[arg(long)]
    pub(crate) to: PathBuf,
    /// Restore the newest state before this bound: a position (exclusive), or a time
    /// (committed before it) as inspect shows it ("YYYY-MM-DD HH:MM:SS.ffffff", UTC) or
    /// RFC 3339 ("2026-11-25T18:12:29Z", "...+01:00").
    #[arg(long)]
    pub(crate) restore_until: Option<String>,
    /// Restore this artifact.
    #[arg(long)]
    pub(crate) artifact: Option<String>,
    /// Replace a non-empty destination.
    #[arg(long)]
    pub(crate) overwrite_destination: bool,
    #[command(flatten)]
    pub(crate) storage: StorageFlags,
}

/// `catena restore`.
pub(crate) async fn run(args: RestoreArgs, ctx: &Ctx) -> Outcome {
    let (format, reporter) = (ctx.format, &ctx.reporter);
    let _ = reporter;
    let repo = repository(
        crate::storage::config(&args.storage, Some(&args.from_path), None)?,
        ctx,
    )
    .await?;
    let db = DatabaseName::new(&args.database).map_err(|e| e.to_string())?;
    let target = match (&args.restore_until, &args.artifact) {
        (Some(_), Some(_)) => {
            return Err("--restore-until and --artifact exclude each other".into());
        }
        (Some(u), None) => parse_until(u)?,
        (None, Some(a)) => RestoreTarget::Artifact(
            a.parse()
                .map_err(|e: catena::chain_core::Error| e.to_string())?,
        ),
        (None, None) => RestoreTarget::Latest,
    };
    let options = RestoreOptions {
        target,
        overwrite: args.overwrite_destination,
        cancel: ctx.cancel.clone(),
        ..RestoreOptions::new(&args.to)
    };
    let report = restore(&repo, &db, &options, reporter)
        .await
        .map_err(|e| e.to_string())?;
    if format == Format::Json {
        print_json(&report);
    } else {
        println!(
            "restored {} ({} files, {} bytes, position {}) into {} from a chain of {}; state digest {} verified",
            report.artifact,
            report.files,
            report.bytes,
            report.position,
            report.destination.display(),
            report.chain.len(),
            report.state_digest
        );
        for note in &report.notes {
            println!("  note: {note}");
        }
    }
    Ok(true)
}
